"""The monitor against the real services: one round, a loop, restarts, the report."""

from __future__ import annotations

import fcntl
import json
import os

from monitor_helpers import PROXY_KEY, read_records, run_monitor


def test_once_records_a_healthy_round(monitor_env, ollama):
    done = run_monitor(monitor_env, "run", "--once")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    records = read_records(monitor_env)
    assert [r["kind"] for r in records] == ["round"]
    record = records[0]
    assert record == printed
    assert record["v"] == 1
    assert record["up"] is True
    checks = record["checks"]
    assert checks["ollama"]["ok"] is True
    assert checks["ollama"]["version"]
    assert checks["redis"]["ok"] is True
    assert checks["proxy"]["ok"] is True
    assert checks["proxy"]["health"]["status"] == "ok"
    assert checks["proxy"]["health"]["model"] == "qwen3:0.6b"
    generation = checks["generation"]
    assert generation["ok"] is True
    assert generation["ran"] is True
    assert generation["model"] == "qwen3:0.6b"  # the model the proxy names
    assert ollama.stats().get("/api/generate", 0) == 1
    assert record["failures"] == {"ollama": 0, "redis": 0, "proxy": 0}
    assert record["disk"][0]["path"] == monitor_env["VASTLLM_MONITOR_STATE_DIR"]
    assert record["memory"]["total_bytes"] > 0
    assert record["gpu"] is None  # no nvidia-smi
    assert record["idle"]["enabled"] is False
    assert record["idle"]["requests_total"] == 0  # /metrics read with the key
    assert PROXY_KEY not in done.stdout + done.stderr


def test_loop_probes_generation_at_the_slower_interval(monitor_env, ollama):
    env = dict(monitor_env, VASTLLM_MONITOR_PROBE_INTERVAL="3600")
    done = run_monitor(env, "run", "--rounds", "4")
    assert done.returncode == 0, done.stderr
    records = read_records(env)
    assert [r["kind"] for r in records] == ["start", "round", "round", "round", "round"]
    assert [r["checks"]["generation"]["ran"] for r in records[1:]] == [True, False, False, False]
    assert all(r["up"] for r in records[1:])
    assert ollama.stats().get("/api/generate", 0) == 1
    start = records[0]
    assert start["config"]["probe_interval"] == 3600.0
    assert records[2]["ts"] - records[1]["ts"] >= 0.15

    report = run_monitor(env, "report", "--json", "--window", "1h")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["uptime"]["fraction"] == 1.0
    assert data["uptime"]["rounds"] == 4
    assert data["restarts"]["last_hour"]["total"] == 0
    assert data["last_record"]["ts"] == records[-1]["ts"]
    assert data["findings"] == []
    text = run_monitor(env, "report")
    assert "uptime      100.00 % (4 of 4 rounds up" in text.stdout


def test_wedged_ollama_is_restarted(monitor_env, ollama, standin):
    """Ollama answers /api/version but every generation fails (lab fault chat_error): after the
    threshold of failed probes (retried each round) the restart command runs once, the stand-in
    clears the fault like a real restart would, and the next probe passes."""
    ollama.set_faults({"chat_error": "CUDA error: an illegal memory access was encountered"})
    env = dict(
        monitor_env,
        VASTLLM_MONITOR_FAILURE_THRESHOLD="2",
        VASTLLM_MONITOR_RESTART_OLLAMA=standin.command("restart", "ollama"),
    )
    done = run_monitor(env, "run", "--rounds", "4")
    assert done.returncode == 0, done.stderr
    assert standin.calls() == [["restart", "ollama"]]
    records = read_records(env)
    rounds = [r for r in records if r["kind"] == "round"]
    assert [r["checks"]["ollama"]["ok"] for r in rounds] == [True] * 4
    assert [r["checks"]["generation"]["status"] for r in rounds] == [
        "failed",
        "failed",
        "ok",
        "ok",
    ]
    assert "CUDA error" in rounds[0]["checks"]["generation"]["error"]
    assert [r["up"] for r in rounds] == [False, False, True, True]
    restarts = [r for r in records if r["kind"] == "restart"]
    assert len(restarts) == 1
    restart = restarts[0]
    assert restart["component"] == "ollama"
    assert "2 consecutive checks" in restart["reason"]
    assert restart["result"]["ok"] is True
    assert restart["result"]["exit_code"] == 0
    assert "restarted restart ollama" in restart["result"]["output"]
    assert rounds[1]["actions"] == [
        {"component": "ollama", "action": "restart", "reason": restart["reason"]}
    ]

    report = json.loads(run_monitor(env, "report", "--json").stdout)
    assert report["uptime"]["fraction"] == 0.5
    assert report["restarts"]["last_hour"] == {"total": 1, "by_component": {"ollama": 1}}
    assert "ollama restarted 1 time in the last hour" in report["findings"]


def test_hung_generation_times_out(monitor_env, ollama):
    ollama.set_faults({"chunk_delay": 30})
    env = dict(monitor_env, VASTLLM_MONITOR_PROBE_TIMEOUT="0.5")
    done = run_monitor(env, "check")
    assert done.returncode == 1
    record = json.loads(done.stdout)
    assert record["checks"]["ollama"]["ok"] is True
    assert record["checks"]["generation"]["status"] == "failed"
    assert record["checks"]["generation"]["error"] == "timed out"
    ollama.clear_faults()


def test_redis_down_restart_cool_down(monitor_env, redis_server, standin):
    """Redis stays down: one restart, then the cool-down holds further ones (no restart loop)."""
    redis_server.kill()
    env = dict(
        monitor_env,
        VASTLLM_MONITOR_FAILURE_THRESHOLD="2",
        VASTLLM_MONITOR_RESTART_REDIS=standin.command("restart", "redis"),
        VASTLLM_MONITOR_PROBE_INTERVAL="3600",
    )
    done = run_monitor(env, "run", "--rounds", "6")
    assert done.returncode == 0, done.stderr
    assert standin.calls() == [["restart", "redis"]]
    rounds = [r for r in read_records(env) if r["kind"] == "round"]
    # counted before the round's action: the restart sets the count back to 0
    assert [r["failures"]["redis"] for r in rounds] == [1, 2, 1, 2, 3, 4]
    assert [a["action"] for r in rounds for a in r["actions"]] == [
        "restart",
        "cooldown",
        "cooldown",
        "cooldown",
    ]
    assert all(r["checks"]["proxy"]["health"]["redis_reachable"] is False for r in rounds)
    assert "restarted restart redis" not in done.stderr  # logs name the restart, not output
    assert "restarting redis" in done.stderr
    # the restart history survives a restart of the monitor: still in cool-down
    again = run_monitor(env, "run", "--rounds", "2")
    assert again.returncode == 0, again.stderr
    assert len(standin.calls()) == 1


def test_check_records_nothing_and_acts_on_nothing(monitor_env, standin, redis_server):
    redis_server.kill()
    env = dict(
        monitor_env,
        VASTLLM_MONITOR_FAILURE_THRESHOLD="1",
        VASTLLM_MONITOR_RESTART_REDIS=standin.command("restart", "redis"),
    )
    done = run_monitor(env, "check")
    assert done.returncode == 1
    record = json.loads(done.stdout)
    assert record["checks"]["redis"]["ok"] is False
    assert record["actions"] == [
        {"component": "redis", "action": "would_restart", "reason": record["actions"][0]["reason"]}
    ]
    assert standin.calls() == []
    assert not os.path.exists(env["VASTLLM_MONITOR_STATE_DIR"])


def test_one_acting_monitor_at_a_time(monitor_env):
    state = monitor_env["VASTLLM_MONITOR_STATE_DIR"]
    os.makedirs(state)
    fd = os.open(os.path.join(state, "monitor.lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = run_monitor(monitor_env, "run", "--once")
    finally:
        os.close(fd)
    assert done.returncode == 3
    assert "another vastllm-monitor run holds" in done.stderr


def test_bad_configuration_exits_2(monitor_env):
    done = run_monitor(dict(monitor_env, VASTLLM_MONITOR_INTERVAL="soon"), "run", "--once")
    assert done.returncode == 2
    assert "VASTLLM_MONITOR_INTERVAL must be a number" in done.stderr
