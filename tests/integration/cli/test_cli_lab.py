"""The `vastllm` command against the vast.ai double and the local lab host (its sshd on
127.0.0.1:2222). Keeper tests need only the lab host's sshd; `up` needs the stack to install."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import LAB_KEY, REPO

from vastllm.cli import tunnel
from vastllm.cli.runner import run_playbook
from vastllm_lab.testing import ansible_env, free_port, ssh_banner
from vastllm_lab.vastai.fixtures import make_instance

pytestmark = pytest.mark.docker


def _seed(label: str = "vastllm-1", status: str = "running", iid: int = 1001) -> dict:
    return make_instance(iid, label=label, status=status, ssh_port=2222, direct_port=2222)


def _spec(tmp_path: Path, port: int) -> dict:
    target = {"host": "127.0.0.1", "port": 2222, "user": "root", "key_file": str(LAB_KEY),
              "known_hosts": str(tmp_path / "kh"), "mode": "direct"}  # fmt: skip
    return tunnel.wanted_spec("t", target, port, 22, 0)  # forwards to the lab host's sshd itself


def test_keeper_reconnects_is_idempotent_and_disconnects(lab_host, tmp_path):
    state_file, log = tmp_path / "t.json", tmp_path / "t.log"
    port = free_port()
    spec = _spec(tmp_path, port)
    tunnel.start_keeper(state_file, log, spec)
    try:
        state = tunnel.wait_up(state_file, 30)
        assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
        assert ssh_banner(port, timeout=3)
        keeper = int(state["pid"])
        # the keeper is in its own session: closing the terminal does not reach it
        assert os.getsid(keeper) == keeper
        # idempotent: the same tunnel again is kept, no second keeper
        assert tunnel.connect_decision(state, tunnel.keeper_alive(state), spec) == "keep"
        # the link drops: ssh is killed, the keeper starts it again
        os.kill(int(state["ssh_pid"]), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = tunnel.read_state(state_file) or {}
            if (
                now.get("reconnects", 0) >= 1
                and now.get("status") == "up"
                and now.get("ssh_pid") not in (None, state["ssh_pid"])
            ):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"no reconnect: {tunnel.read_state(state_file)} {log.read_text()}")
        assert ssh_banner(port, timeout=3)
        assert int(now["pid"]) == keeper
    finally:
        assert tunnel.stop_keeper(state_file)
    assert not state_file.exists()
    assert not tunnel.pid_alive(keeper)
    assert not tunnel.port_open(port)


def test_runs_log_never_holds_a_secret(tmp_path):
    secret = "vastllm-" + "s3cr3t-" * 4
    play = tmp_path / "leak.yml"
    play.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"name": "say it", "ansible.builtin.debug": {"msg": f"the key is {secret}"}},
                  {"name": "echo it", "ansible.builtin.command": f"echo {secret}"}]}]))  # fmt: skip
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = ansible_env(REPO, home=tmp_path)
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        result = run_playbook(play, repo=REPO, run_dir=run_dir, inventory="localhost,",
                              extravars={"ansible_python_interpreter": sys.executable},
                              secrets=lambda: [secret], out=io.StringIO())  # fmt: skip
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert result.ok, result
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any("job_events" in str(p) for p in files)
    for path in files:
        assert secret not in path.read_text(errors="replace"), path
    assert any("<redacted>" in p.read_text(errors="replace") for p in files)


def test_up_refuses_to_rent_without_a_cap(double, cli_factory):
    server = double(instances=[])
    cli = cli_factory(server)
    proc = cli("up", "--label", "vastllm-1")
    assert proc.returncode == 2
    assert "refusing to rent vastllm-1 without a price cap" in proc.stderr
    assert not server.state.instances
    doc = cli.json("up", "--label", "vastllm-1")
    assert doc["ok"] is False
    assert "price cap" in doc["error"]


def test_up_refuses_when_no_offer_fits_the_total(double, cli_factory):
    server = double(instances=[])
    proc = cli_factory(server)("up", "--max-price", "0.01")
    assert proc.returncode == 1
    assert "no offer within $0.0100/h" in proc.stderr
    assert not server.state.instances


def test_status_table_and_json(lab_host, double, cli_factory):
    server = double(instances=[_seed(), _seed("vastllm-2", "stopped", 1002), _seed("other", iid=9)])
    cli = cli_factory(server)
    proc = cli("status")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("LABEL")
    assert any(line.startswith("vastllm-1") and "running" in line for line in lines)
    assert any(line.startswith("vastllm-2") and "stopped" in line for line in lines)
    assert not any(line.startswith("other") for line in lines)
    assert "spending (vastllm*): 2 instance(s), 1 running" in proc.stdout
    doc = cli.json("status")
    assert doc["ok"]
    assert [r["label"] for r in doc["instances"]] == ["vastllm-1", "vastllm-2"]
    assert doc["instances"][0]["spent"] > 0
    assert doc["instances"][0]["tunnel"] == "down"


def test_down_stops_then_destroys(double, cli_factory):
    server = double(instances=[_seed()])
    cli = cli_factory(server)
    doc = cli.json("down")
    assert doc["ok"] and doc["stopped"], doc  # noqa: PT018
    row = next(iter(server.state.instances.values()))
    assert row["intended_status"] == "stopped"
    proc = cli("down", "--destroy")  # no terminal, no --yes: refused
    assert proc.returncode == 2
    assert "--yes" in proc.stderr
    assert server.state.instances
    doc = cli.json("down", "--destroy", "--yes")
    assert doc["ok"] and doc["destroyed"], doc  # noqa: PT018
    assert not server.state.instances
    assert cli.json("down")["summary"].startswith("no instance labelled vastllm-1")


@pytest.mark.slow
def test_up_rents_with_cap_then_rerun_changes_nothing(lab_host, double, cli_factory):
    server = double(instances=[])
    cli = cli_factory(server)
    port = str(free_port())
    first = cli.json("up", "--max-price", "1.0", "--local-port", port)
    assert first["ok"] and first["rented"], first  # noqa: PT018
    assert len(server.state.instances) == 1
    env_file = Path(first["env_file"])
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    token = [line for line in env_file.read_text().splitlines() if "ANTHROPIC_AUTH_TOKEN" in line]
    assert token
    for path in (cli.home / "state" / "runs").rglob("*"):
        if path.is_file():
            assert token[0].split("=", 1)[1].strip("'\"") not in path.read_text(errors="replace")
    started = time.monotonic()
    again = cli.json("up", "--max-price", "1.0", "--local-port", port)
    assert again["ok"] and not again["rented"] and again["site_changed"] == 0, again  # noqa: PT018
    assert again["tunnel"] == "keep"
    assert len(server.state.instances) == 1
    print(f"first up {first['seconds']} s, re-run {time.monotonic() - started:.0f} s")
    table = cli("status")
    assert "vastllm-1" in table.stdout
    assert "spending" in table.stdout
    print(table.stdout)  # the table a user sees (shown with pytest -s)
    assert cli.json("down", "--destroy", "--yes")["destroyed"]


def test_up_starts_a_stopped_instance_without_renting(lab_host, double, cli_factory):
    """After the monitor's idle stop, `up` starts the instance: the start needs no cap/image."""
    seed = {**_seed(status="exited"), "intended_status": "stopped"}
    server = double(instances=[seed])
    cli = cli_factory(server)
    # A missing stack playbook stops `up` right after the start and the SSH wait (fast).
    proc = cli("up", "--playbook", "playbooks/no-such-stack.yml")
    assert "starting vastllm-1 (instance 1001" in proc.stderr, proc.stderr
    assert "starting vastllm-1 failed" not in proc.stderr, proc.stderr
    assert "the stack playbook" in proc.stderr, proc.stderr
    assert "does not exist" in proc.stderr, proc.stderr
    row = server.state.instances[1001]
    assert row["intended_status"] == "running"
    assert row["actual_status"] == "running"
    assert list(server.state.instances) == [1001]  # nothing rented
