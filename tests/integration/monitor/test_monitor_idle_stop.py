"""Idle auto-stop against the real proxy's request counter and the vast.ai lab double.

The double has no per-instance scoped key yet: the "scoped" key here is an account key of the
double (see the report of this change for what the double needs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monitor_helpers import (
    INSTANCE_ID,
    PROXY_KEY,
    SCOPED_KEY,
    fake_proc1,
    read_records,
    run_monitor,
)

from vastllm.monitor.config import load_config
from vastllm.monitor.daemon import Monitor
from vastllm_lab.vastai.server import LabServer
from vastllm_lab.vastai.state import LabState


@pytest.fixture
def vastai() -> LabServer:
    state = LabState(api_keys=[SCOPED_KEY], instances=[{"id": INSTANCE_ID}], loading_delay=0.1)
    server = LabServer(state).start()
    yield server
    server.stop()


def scoped_env(tmp_path: Path, **extra: str) -> str:
    env = {"PATH": "/usr/bin", "CONTAINER_ID": str(INSTANCE_ID), "CONTAINER_API_KEY": SCOPED_KEY}
    env.update(extra)
    return fake_proc1(tmp_path / "proc1", env)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def minutes(self, minutes: float) -> None:
        self.now += minutes * 60


def stop_calls(server: LabServer) -> list[tuple[str, str]]:
    return [r for r in server.state.requests if r[0] == "PUT"]


def all_text(directory: str) -> str:
    return "".join(p.read_text(errors="replace") for p in Path(directory).iterdir() if p.is_file())


def test_idle_timer_and_stop(tmp_path, monitor_env, proxy, vastai):
    env = dict(
        monitor_env,
        VASTLLM_MONITOR_IDLE_STOP_MINUTES="60",
        VASTLLM_MONITOR_VASTAI_URL=vastai.url,
        VASTLLM_MONITOR_PID1_ENVIRON=scoped_env(tmp_path),
        VASTLLM_MONITOR_PROBE_INTERVAL="0",
    )
    config, _ = load_config(env)
    clock = Clock()
    start = clock.now
    monitor = Monitor(config, clock=clock)

    first = monitor.run_round()
    assert first["idle"]["action"] == "wait"
    assert first["idle"]["idle_minutes"] == 0
    assert first["idle"]["requests_total"] == 0
    assert first["idle"]["credential"] is True

    clock.minutes(30)
    assert proxy.message("are you there?") == 200
    second = monitor.run_round()  # the counter went up: the idle period starts again
    assert second["idle"]["requests_total"] == 1
    assert second["idle"]["idle_since"] == clock.now
    assert second["idle"]["last_request_at"] == clock.now
    assert second["idle"]["minutes_until_stop"] == 60

    clock.minutes(59)
    third = monitor.run_round()
    assert third["idle"]["action"] == "wait"
    assert third["idle"]["minutes_until_stop"] == pytest.approx(1)
    assert stop_calls(vastai) == []

    clock.minutes(2)
    fourth = monitor.run_round()
    assert fourth["idle"]["action"] == "stop"
    assert stop_calls(vastai) == [("PUT", f"/api/v0/instances/{INSTANCE_ID}/")]
    instance = vastai.state.instances[INSTANCE_ID]
    assert instance["intended_status"] == "stopped"
    assert instance["actual_status"] == "exited"

    records = read_records(env)
    stops = [r for r in records if r["kind"] == "idle_stop"]
    assert [s["phase"] for s in stops] == ["requested", "result"]
    requested, result = stops
    assert requested["instance_id"] == str(INSTANCE_ID)
    assert "no proxy request for 61.0 minutes" in requested["reason"]
    assert requested["api_url"] == vastai.url
    assert result["result"]["ok"] is True
    assert result["result"]["http_status"] == 200
    # recorded before the call: the request record precedes the round that made it
    assert records.index(requested) < records.index(result)

    clock.minutes(1)
    fifth = monitor.run_round()  # still running (the stop takes a while): no second call
    assert fifth["idle"]["action"] == "retry_wait"
    assert len(stop_calls(vastai)) == 1

    text = all_text(env["VASTLLM_MONITOR_STATE_DIR"])
    assert SCOPED_KEY not in text
    assert PROXY_KEY not in text

    report = run_monitor(env, "report", "--json")
    data = json.loads(report.stdout)
    assert data["idle"]["enabled"] is True
    assert data["idle"]["stop_after_minutes"] == 60
    assert len(data["idle_stops"]) == 2
    assert clock.now - start > 0


def test_stop_refused_is_recorded_without_the_key(tmp_path, monitor_env, proxy, vastai):
    env = dict(
        monitor_env,
        VASTLLM_MONITOR_IDLE_STOP_MINUTES="1",
        VASTLLM_MONITOR_VASTAI_URL=vastai.url,
        VASTLLM_MONITOR_PID1_ENVIRON=scoped_env(tmp_path, CONTAINER_API_KEY="not-a-known-key"),
        VASTLLM_MONITOR_PROBE_INTERVAL="0",
    )
    clock = Clock()
    monitor = Monitor(load_config(env)[0], clock=clock)
    monitor.run_round()
    clock.minutes(2)
    monitor.run_round()
    result = [r for r in read_records(env) if r["kind"] == "idle_stop"][-1]
    assert result["result"]["ok"] is False
    assert result["result"]["http_status"] == 401
    assert vastai.state.instances[INSTANCE_ID]["intended_status"] == "running"
    assert "not-a-known-key" not in all_text(env["VASTLLM_MONITOR_STATE_DIR"])


def test_no_scoped_credential_no_stop(tmp_path, monitor_env, proxy, vastai):
    environ = fake_proc1(tmp_path / "proc1", {"VAST_API_KEY": "the-users-own-key"})
    env = dict(
        monitor_env,
        VASTLLM_MONITOR_IDLE_STOP_MINUTES="1",
        VASTLLM_MONITOR_VASTAI_URL=vastai.url,
        VASTLLM_MONITOR_PID1_ENVIRON=environ,
        VASTLLM_MONITOR_PROBE_INTERVAL="0",
    )
    clock = Clock()
    monitor = Monitor(load_config(env)[0], clock=clock)
    monitor.run_round()
    clock.minutes(5)
    record = monitor.run_round()
    assert record["idle"]["action"] == "no_credential"
    assert "CONTAINER_ID/CONTAINER_API_KEY" in record["idle"]["credential_error"]
    assert vastai.state.requests == []
    assert "the-users-own-key" not in all_text(env["VASTLLM_MONITOR_STATE_DIR"])


def test_unreadable_counter_holds_the_stop(tmp_path, monitor_env, proxy, vastai):
    key_file = tmp_path / "wrong-key"
    key_file.write_text("wrong")
    env = dict(
        monitor_env,
        VASTLLM_MONITOR_IDLE_STOP_MINUTES="1",
        VASTLLM_MONITOR_VASTAI_URL=vastai.url,
        VASTLLM_MONITOR_PID1_ENVIRON=scoped_env(tmp_path),
        VASTLLM_MONITOR_PROXY_API_KEY_FILE=str(key_file),
        VASTLLM_MONITOR_PROBE_INTERVAL="0",
    )
    clock = Clock()
    monitor = Monitor(load_config(env)[0], clock=clock)
    monitor.run_round()
    clock.minutes(5)
    record = monitor.run_round()
    assert record["idle"]["action"] == "held"
    assert record["idle"]["error"] == "cannot read the request counter from /metrics (HTTP 401)"
    assert stop_calls(vastai) == []


def test_proxy_down_counts_as_idle(tmp_path, monitor_env, proxy, vastai):
    env = dict(
        monitor_env,
        VASTLLM_MONITOR_IDLE_STOP_MINUTES="1",
        VASTLLM_MONITOR_VASTAI_URL=vastai.url,
        VASTLLM_MONITOR_PID1_ENVIRON=scoped_env(tmp_path),
        VASTLLM_MONITOR_PROBE_INTERVAL="0",
    )
    clock = Clock()
    monitor = Monitor(load_config(env)[0], clock=clock)
    monitor.run_round()
    proxy.stop()
    clock.minutes(2)
    record = monitor.run_round()
    assert record["checks"]["proxy"]["ok"] is False
    assert record["idle"]["action"] == "stop"
    assert len(stop_calls(vastai)) == 1


def test_idle_timer_survives_a_monitor_restart_but_not_a_new_container(
    tmp_path, monitor_env, proxy, vastai
):
    env = dict(
        monitor_env,
        VASTLLM_MONITOR_IDLE_STOP_MINUTES="60",
        VASTLLM_MONITOR_VASTAI_URL=vastai.url,
        VASTLLM_MONITOR_PID1_ENVIRON=scoped_env(tmp_path),
        VASTLLM_MONITOR_PROBE_INTERVAL="0",
    )
    config = load_config(env)[0]
    clock = Clock()
    since = clock.now
    Monitor(config, clock=clock).run_round()
    clock.minutes(30)
    again = Monitor(config, clock=clock).run_round()  # the monitor restarted
    assert again["idle"]["idle_since"] == since
    assert again["idle"]["minutes_until_stop"] == 30
    # the instance was stopped and started again: PID 1 is new, the timer starts afresh
    fake_proc1(
        tmp_path / "proc1",
        {"CONTAINER_ID": str(INSTANCE_ID), "CONTAINER_API_KEY": SCOPED_KEY},
        start="99999",
    )
    clock.minutes(45)
    fresh = Monitor(config, clock=clock).run_round()
    assert fresh["idle"]["idle_since"] == clock.now
    assert fresh["idle"]["action"] == "wait"
    assert stop_calls(vastai) == []


def test_idle_stop_in_the_loop(tmp_path, monitor_env, proxy, vastai):
    """The real loop (subprocess): 0.6 s without a request, then one stop call."""
    env = dict(
        monitor_env,
        VASTLLM_MONITOR_IDLE_STOP_MINUTES="0.01",
        VASTLLM_MONITOR_VASTAI_URL=vastai.url,
        VASTLLM_MONITOR_PID1_ENVIRON=scoped_env(tmp_path),
        VASTLLM_MONITOR_PROBE_INTERVAL="3600",
    )
    done = run_monitor(env, "run", "--rounds", "8")
    assert done.returncode == 0, done.stderr
    assert stop_calls(vastai) == [("PUT", f"/api/v0/instances/{INSTANCE_ID}/")]
    assert vastai.state.instances[INSTANCE_ID]["intended_status"] == "stopped"
    assert f"stopping instance {INSTANCE_ID}: no proxy request" in done.stderr
    assert SCOPED_KEY not in done.stdout + done.stderr
    assert SCOPED_KEY not in all_text(env["VASTLLM_MONITOR_STATE_DIR"])
