"""The wheel the proxy role installs on GPU hosts holds the proxy only; the lab doubles are a
distribution of their own (lab/), installed next to it for the tests and the local lab.

The wheels are built the way roles/proxy/tasks/install.yml builds them: hatchling's WheelBuilder.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import zipfile
from pathlib import Path

import pytest
from hatchling.builders.wheel import WheelBuilder

REPO = Path(__file__).resolve().parents[2]


def _build(root: Path, out: Path) -> zipfile.ZipFile:
    (wheel,) = WheelBuilder(str(root)).build(directory=str(out), versions=["standard"])
    return zipfile.ZipFile(wheel)


def _console_scripts(wheel: zipfile.ZipFile) -> set[str]:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(name).decode())
    return set(parser["console_scripts"]) if parser.has_section("console_scripts") else set()


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return _build(REPO, tmp_path_factory.mktemp("product-wheel"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return _build(REPO / "lab", tmp_path_factory.mktemp("lab-wheel"))


def test_product_wheel_holds_the_proxy(product: zipfile.ZipFile) -> None:
    names = product.namelist()
    assert "vastllm/proxy/__main__.py" in names
    assert any(n.startswith("vastllm/proxy/") and n.endswith(".py") for n in names)
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert packages == {"vastllm"}


def test_product_wheel_has_no_lab(product: zipfile.ZipFile) -> None:
    lab_members = [
        n
        for n in product.namelist()
        if "vastllm_lab" in n or n.startswith(("lab/", "vastllm/lab/"))
    ]
    assert lab_members == []


def test_product_wheel_scripts(product: zipfile.ZipFile) -> None:
    scripts = _console_scripts(product)
    assert "vastllm-proxy" in scripts
    assert "vastllm-lab" not in scripts


def test_lab_wheel_holds_the_doubles_and_the_lab_script(lab: zipfile.ZipFile) -> None:
    names = lab.namelist()
    for module in (
        "vastllm_lab/__main__.py",
        "vastllm_lab/host.py",
        "vastllm_lab/testing.py",
        "vastllm_lab/ollama/server.py",
        "vastllm_lab/ollama/state.py",
        "vastllm_lab/ollama/wire.py",
        "vastllm_lab/ollama/handlers.py",
        "vastllm_lab/vastai/state.py",
        "vastllm_lab/vastai/routes.py",
        "vastllm_lab/vastai/fixtures.py",
    ):
        assert module in names
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert packages == {"vastllm_lab"}
    assert _console_scripts(lab) == {"vastllm-lab"}


def test_installed_distributions_split_the_scripts() -> None:
    """What scripts/setup.sh installed: each script comes from its own distribution."""
    product = {e.name for e in importlib.metadata.distribution("vastllm").entry_points}
    lab = {e.name for e in importlib.metadata.distribution("vastllm-lab").entry_points}
    assert "vastllm-proxy" in product
    assert "vastllm-lab" not in product
    assert lab == {"vastllm-lab"}
