"""Fixtures for the vast.ai unit tests.

The plugin files are loaded from ``plugins/`` exactly as they ship: module_utils under their
Ansible names (``ansible.module_utils.vastai_api``), the module and the inventory plugin by path.
An in-process emulator (``vastllm.lab.vastai``) listens on 127.0.0.1 for the HTTP-level tests.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import ansible.module_utils
import pytest

from vastllm.lab.vastai.server import LabServer
from vastllm.lab.vastai.state import LabState

REPO = Path(__file__).resolve().parents[3]


def _load(full: str, path: Path) -> ModuleType:
    if full in sys.modules:
        return sys.modules[full]
    spec = importlib.util.spec_from_file_location(full, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    spec.loader.exec_module(module)
    return module


def load_module_util(name: str) -> ModuleType:
    module = _load(f"ansible.module_utils.{name}", REPO / "plugins" / "module_utils" / f"{name}.py")
    setattr(ansible.module_utils, name, module)
    return module


vastai_api = load_module_util("vastai_api")
vastai_offers = load_module_util("vastai_offers")


@pytest.fixture
def api() -> ModuleType:
    return vastai_api


@pytest.fixture
def offers_mod() -> ModuleType:
    return vastai_offers


@pytest.fixture
def module_file() -> ModuleType:
    return _load(
        "vastllm_test_vastai_instance", REPO / "plugins" / "modules" / "vastai_instance.py"
    )


@pytest.fixture
def inventory_plugin_module() -> ModuleType:
    return _load("vastllm_test_vastai_inventory", REPO / "plugins" / "inventory" / "vastai.py")


@pytest.fixture
def lab() -> Iterator[LabServer]:
    """An emulator with 60 generated instances, key ``lab-key`` (read-only key ``ro-key``)."""
    from vastllm.lab.vastai.state import generate_instances

    state = LabState(
        api_keys=["lab-key"],
        readonly_keys=["ro-key"],
        instances=generate_instances(60),
        loading_delay=0.2,
    )
    server = LabServer(state).start()
    try:
        yield server
    finally:
        server.stop()
