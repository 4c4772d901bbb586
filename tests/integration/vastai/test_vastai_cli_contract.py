"""Contract: the real ``vastai`` CLI (PyPI package ``vastai``) against the vast.ai lab double.

One test per command the project uses (plugins/module_utils/vastai_api.py and the coming
``vastllm`` CLI): the listing, one instance, label, stop, start, create (as ``vastai_instance``
rents: image, disk, label, Docker-flag env, onstart), destroy, attach ssh, offer search with and
without numeric filters. The CLI is run as users run it (``--url``, ``--api-key``, ``--raw``) from
a throw-away HOME, with its update check off; everything stays on 127.0.0.1. If a new CLI
release changes a path or a body, these tests fail before our users do.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vastllm_lab.vastai.fixtures import make_instance
from vastllm_lab.vastai.server import LabServer
from vastllm_lab.vastai.state import LabState

pytestmark = pytest.mark.slow  # each CLI run costs about 2 s of imports

REPO = Path(__file__).resolve().parents[3]
VASTAI = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "vastai"
KEY = "lab-key"


@pytest.fixture
def double() -> Iterator[LabServer]:
    """The double with two seed instances (7 running, 8 stopped) and the generated market."""
    state = LabState(
        api_keys=[KEY],
        instances=[
            make_instance(7, label="vastllm-a", start_date=1_732_000_000.0),
            make_instance(8, label="vastllm-b", status="exited"),
        ],
        loading_delay=0.0,
    )
    server = LabServer(state).start()
    try:
        yield server
    finally:
        server.stop()


def vastai(
    server: LabServer, home: Path, *args: str, raw: bool = True
) -> subprocess.CompletedProcess[str]:
    if not VASTAI.exists():
        pytest.skip("the vastai CLI is not installed in the venv")
    env = {
        k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k != "VAST_URL"
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        VASTAI_NO_UPDATE_CHECK="1",
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )
    env.pop("VAST_API_KEY", None)
    cmd = [str(VASTAI), *args, "--url", server.url, "--api-key", KEY]
    if raw:
        cmd.append("--raw")
    return subprocess.run(
        cmd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def ok_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def calls(server: LabServer) -> list[tuple[str, str]]:
    """The API calls of the command (the CLI's one-off role probe left out)."""
    return [(m, p) for m, p in server.state.requests if p != "/api/v0/users/current"]


def test_role_probe_is_answered(double, tmp_path):
    proc = vastai(double, tmp_path, "show", "instance", "7")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ("GET", "/api/v0/users/current") in double.state.requests
    assert (tmp_path / ".config" / "vastai" / "vast_role").read_text().strip() == "client"


def test_show_instances(double, tmp_path):
    rows = ok_json(vastai(double, tmp_path, "show", "instances"))
    assert [r["id"] for r in rows] == [7, 8]
    assert rows[0]["label"] == "vastllm-a"
    # the CLI computes duration from start_date and turns extra_env pairs into a mapping
    assert rows[0]["duration"] > 0
    assert calls(double) == [("GET", "/api/v1/instances/")]


def test_show_instances_status_filter(double, tmp_path):
    rows = ok_json(vastai(double, tmp_path, "show", "instances", "--status", "exited"))
    assert [r["id"] for r in rows] == [8]


def test_show_instance(double, tmp_path):
    row = ok_json(vastai(double, tmp_path, "show", "instance", "7"))
    assert (row["id"], row["actual_status"]) == (7, "running")
    assert {"dph_total", "start_date", "storage_cost"} <= row.keys()
    assert calls(double) == [("GET", "/api/v0/instances/7/")]


def test_label_instance(double, tmp_path):
    proc = vastai(double, tmp_path, "label", "instance", "7", "renamed")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert double.state.instances[7]["label"] == "renamed"
    assert calls(double) == [("PUT", "/api/v0/instances/7/")]


def test_stop_instance(double, tmp_path):
    proc = vastai(double, tmp_path, "stop", "instance", "7")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = double.state.instances[7]
    assert (row["actual_status"], row["intended_status"]) == ("exited", "stopped")


def test_start_instance(double, tmp_path):
    proc = vastai(double, tmp_path, "start", "instance", "8")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert double.state.instances[8]["intended_status"] == "running"
    assert calls(double) == [("PUT", "/api/v0/instances/8/")]


def test_create_instance_as_vastai_instance_rents(double, tmp_path):
    offer_id = next(iter(double.state.offers))
    created = ok_json(
        vastai(
            double,
            tmp_path,
            "create",
            "instance",
            str(offer_id),
            "--image",
            "vastai/base-image:cuda-12.4",
            "--disk",
            "40",
            "--label",
            "vastllm-new",
            "--env",
            "-p 8000:8000 -e OLLAMA_HOST=0.0.0.0 -e K=V",
            "--onstart-cmd",
            "echo started",
            "--ssh",
            "--direct",
        )
    )
    assert created["success"] is True
    row = double.state.instances[created["new_contract"]]
    assert (row["label"], row["image_uuid"], row["disk_space"]) == (
        "vastllm-new",
        "vastai/base-image:cuda-12.4",
        40.0,
    )
    assert row["onstart"] == "echo started"
    assert row["extra_env"] == [["OLLAMA_HOST", "0.0.0.0"], ["K", "V"]]
    assert row["_requested_ports"] == ["8000/tcp"]
    assert row["image_runtype"] == "ssh_direc ssh_proxy"
    assert calls(double) == [("PUT", f"/api/v0/asks/{offer_id}/")]


def test_create_on_a_gone_offer_is_404(double, tmp_path):
    proc = vastai(double, tmp_path, "create", "instance", "1", "--image", "i")
    assert proc.returncode != 0 or "404" in proc.stdout + proc.stderr
    assert "404" in proc.stdout + proc.stderr
    assert not [i for i in double.state.instances if i not in (7, 8)]


def test_destroy_instance(double, tmp_path):
    proc = vastai(double, tmp_path, "destroy", "instance", "7", "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 7 not in double.state.instances
    assert calls(double) == [("DELETE", "/api/v0/instances/7/")]


def test_attach_ssh(double, tmp_path):
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIContractTestKey lab@vastllm"
    proc = vastai(double, tmp_path, "attach", "ssh", "7", key, raw=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert double.state.ssh_keys[7] == [key]
    assert calls(double) == [("POST", "/api/v0/instances/7/ssh/")]


def test_search_offers_unfiltered(double, tmp_path):
    offers = ok_json(vastai(double, tmp_path, "search", "offers"))
    market = double.state.offers.values()
    # the CLI's default query: verified, not external, rentable
    assert len(offers) == sum(1 for o in market if o["verified"] and not o["rented"])
    scores = [o["score"] for o in offers]
    assert scores == sorted(scores, reverse=True)  # default order: score-
    assert calls(double) == [("POST", "/api/v0/bundles/")]


@pytest.mark.parametrize(
    ("query", "check"),
    [
        ("num_gpus=1", lambda o: o["num_gpus"] == 1),
        ("dph<0.6", lambda o: o["dph_total"] < 0.6),
        ("reliability>0.97", lambda o: o["reliability"] > 0.97),
        ("num_gpus>=2 gpu_ram>=40", lambda o: o["num_gpus"] >= 2 and o["gpu_ram"] >= 40_000),
        (
            "gpu_name=RTX_4090 num_gpus=1",
            lambda o: o["gpu_name"] == "RTX 4090" and o["num_gpus"] == 1,
        ),
    ],
)
def test_search_offers_numeric_filters(double, tmp_path, query, check):
    offers = ok_json(vastai(double, tmp_path, "search", "offers", query, "-o", "dph"))
    assert offers, f"{query!r} found nothing"
    assert all(check(o) for o in offers)
    prices = [o["dph_total"] for o in offers]
    assert prices == sorted(prices)
    expected = [
        o for o in double.state.offers.values() if o["verified"] and not o["rented"] and check(o)
    ]
    assert len(offers) == len(expected)


def test_search_offers_limit(double, tmp_path):
    offers = ok_json(vastai(double, tmp_path, "search", "offers", "num_gpus=1", "--limit", "3"))
    assert len(offers) == 3
