"""The monitor's pure decisions, on literal inputs."""

from __future__ import annotations

import pytest

from vastllm.monitor.policy import (
    IdleState,
    advance_idle,
    classify_probe,
    count_failures,
    decide_idle_stop,
    decide_restart,
    files_oldest_first,
    findings,
    parse_duration,
    probe_due,
    requests_from_metrics,
    restartable_failures,
    restarts_summary,
    rotation_moves,
    round_health,
    round_up,
    should_rotate,
    uptime,
)

OK = {"ok": True, "status": "ok"}
DOWN = {"ok": False, "status": "down", "error": "refused"}
DISABLED = {"ok": None, "status": "disabled"}
GEN_OK = {"ok": True, "status": "ok", "model": "m"}
GEN_FAIL = {"ok": False, "status": "failed", "error": "HTTP 500: boom"}
GEN_MISSING = {"ok": False, "status": "model_missing", "model": "m"}


def checks(ollama=OK, redis=OK, proxy=OK, generation=GEN_OK):
    return {"ollama": ollama, "redis": redis, "proxy": proxy, "generation": generation}


# -- health ---------------------------------------------------------------------------------------
def test_round_up_needs_every_part_and_the_generation():
    assert round_up(checks())
    assert not round_up(checks(generation=GEN_FAIL))
    assert not round_up(checks(generation=GEN_MISSING))
    assert not round_up(checks(redis=DOWN))
    assert not round_up(checks(proxy=DOWN))
    assert not round_up(checks(ollama=DOWN))


def test_disabled_parts_do_not_count():
    assert round_up(checks(redis=DISABLED, proxy=DISABLED, generation=DISABLED))
    assert round_health(checks(redis=DISABLED)) == {
        "ollama": True,
        "redis": None,
        "proxy": True,
        "generation": True,
    }


def test_a_probe_that_never_ran_is_not_healthy():
    assert not round_up(checks(generation={"ok": False, "status": "skipped"}))
    assert not round_up({"ollama": OK, "redis": OK, "proxy": OK})


def test_restartable_failures():
    assert restartable_failures(checks()) == {"ollama": False, "redis": False, "proxy": False}
    # a wedged Ollama: /api/version answers, generations fail -> restart Ollama
    assert restartable_failures(checks(generation=GEN_FAIL))["ollama"] is True
    # a missing model is not fixed by a restart
    assert restartable_failures(checks(generation=GEN_MISSING))["ollama"] is False
    assert restartable_failures(checks(redis=DOWN, proxy=DOWN)) == {
        "ollama": False,
        "redis": True,
        "proxy": True,
    }
    assert restartable_failures(checks(redis=DISABLED, proxy=DISABLED))["redis"] is False


def test_count_failures_is_consecutive():
    counts = {}
    for failed in (True, True, False, True):
        counts = count_failures(counts, {"redis": failed})
    assert counts == {"ollama": 0, "redis": 1, "proxy": 0}
    counts = count_failures(counts, {"redis": True, "proxy": True})
    assert counts == {"ollama": 0, "redis": 2, "proxy": 1}


# -- restart decision -----------------------------------------------------------------------------
def decide(failures, restart_times=(), now=10_000.0, has_command=True):
    return decide_restart(
        "ollama",
        failures,
        threshold=3,
        now=now,
        restart_times=list(restart_times),
        cooldown=300,
        max_per_hour=4,
        has_command=has_command,
    )


def test_restart_after_threshold_consecutive_failures():
    assert decide(0).action == "none"
    assert decide(2).action == "none"
    decision = decide(3)
    assert decision.action == "restart"
    assert "3 consecutive checks" in decision.reason
    assert decide(7).action == "restart"


def test_no_command_means_no_restart():
    assert decide(3, has_command=False).action == "no_command"


def test_cool_down_after_a_restart():
    assert decide(3, [10_000 - 100]).action == "cooldown"
    assert "200s left" in decide(3, [10_000 - 100]).reason
    assert decide(3, [10_000 - 300]).action == "restart"


def test_restart_limit_per_hour():
    times = [10_000 - 3000, 10_000 - 2000, 10_000 - 1000, 10_000 - 400]
    assert decide(3, times).action == "limit"
    # older than an hour: forgotten
    assert decide(3, [t - 3600 for t in times]).action == "restart"


def test_restart_times_in_the_future_are_ignored():
    assert decide(3, [20_000.0]).action == "restart"


# -- generation probe -----------------------------------------------------------------------------
def test_probe_due():
    assert probe_due(100, None, None, 300, True)
    assert not probe_due(100, None, None, 300, False)  # Ollama down: no probe
    assert not probe_due(100, None, None, 0, True)  # disabled
    assert not probe_due(100, 0, True, 300, True)
    assert probe_due(300, 0, True, 300, True)
    assert probe_due(1, 0, False, 300, True)  # failed: retry every round


@pytest.mark.parametrize(
    ("status", "error", "body", "expected"),
    [
        (200, None, {"response": "O", "done": True}, ("ok", None)),
        (None, "timed out", None, ("failed", "timed out")),
        (500, None, {"error": "boom"}, ("failed", "HTTP 500: boom")),
        (503, None, {"error": "server busy"}, ("failed", "HTTP 503: server busy")),
        (404, None, {"error": 'model "x" not found'}, ("model_missing", 'model "x" not found')),
        (200, None, {"done": False}, ("failed", "answer is not a finished generation")),
        (200, None, None, ("failed", "answer is not a finished generation")),
    ],
)
def test_classify_probe(status, error, body, expected):
    assert classify_probe(status, error, body) == expected


# -- request counter ------------------------------------------------------------------------------
METRICS = """# HELP vastllm_requests_total Requests answered, by route and HTTP status.
# TYPE vastllm_requests_total counter
vastllm_requests_total{route="count_tokens",status="200"} 2
vastllm_requests_total{route="health",status="200"} 40
vastllm_requests_total{route="messages",status="200"} 7
vastllm_requests_total{route="messages",status="529"} 1
vastllm_requests_total{route="messages",status="401"} 900
vastllm_requests_total{route="count_tokens",status="401"} 50
vastllm_requests_total{route="messages",status="304"} 1
vastllm_requests_total{route="metrics",status="200"} 12
# TYPE vastllm_cache_hit_ratio gauge
vastllm_cache_hit_ratio 0.5
"""


def test_requests_from_metrics_counts_only_the_client_routes():
    assert requests_from_metrics(METRICS, ["messages", "count_tokens"]) == 10  # 2 + 7 + 1 (304)
    assert requests_from_metrics(METRICS, ["messages"]) == 8  # 7 + 1 (304); 529, 401 not
    assert requests_from_metrics(METRICS, []) == 0


def test_requests_from_metrics_ignores_refused_requests():
    """A scanner posting to /v1/messages without the key (401) must not keep the instance
    alive: only answers below 400 count."""
    only_refused = (
        "# TYPE vastllm_requests_total counter\n"
        'vastllm_requests_total{route="messages",status="401"} 5000\n'
        'vastllm_requests_total{route="messages",status="413"} 3\n'
        'vastllm_requests_total{status="400",route="count_tokens"} 2\n'
    )
    assert requests_from_metrics(only_refused, ["messages", "count_tokens"]) == 0
    state = advance_idle(IdleState(idle_since=0.0), 10, 0)
    more_401s = only_refused.replace("5000", "9000")
    assert advance_idle(state, 20, requests_from_metrics(more_401s, ["messages"])).idle_since == 0.0


def test_requests_from_metrics_label_order_and_bad_status():
    text = (
        'vastllm_requests_total{status="200",route="messages"} 3\n'
        'vastllm_requests_total{route="messages",status="x"} 4\n'
        'vastllm_requests_total{route="messages"} 5\n'
    )
    assert requests_from_metrics(text, ["messages"]) == 3


def test_requests_from_metrics_without_requests_yet():
    text = "# TYPE vastllm_requests_total counter\n# TYPE other gauge\nother 1\n"
    assert requests_from_metrics(text, ["messages"]) == 0


def test_requests_from_metrics_not_the_proxy():
    assert requests_from_metrics("<html>login</html>", ["messages"]) is None
    assert requests_from_metrics("", ["messages"]) is None


# -- idle timer -----------------------------------------------------------------------------------
def test_advance_idle():
    state = IdleState(idle_since=100.0)
    state = advance_idle(state, 110, 5)  # first reading: a baseline, not a request
    assert state == IdleState(100.0, 5, None)
    state = advance_idle(state, 120, 5)
    assert state == IdleState(100.0, 5, None)
    state = advance_idle(state, 130, 6)  # a request
    assert state == IdleState(130, 6, 130)
    state = advance_idle(state, 140, None)  # the proxy is down: the timer runs on
    assert state == IdleState(130, 6, 130)
    state = advance_idle(state, 150, 0)  # the proxy restarted, no request since
    assert state == IdleState(130, 0, 130)
    state = advance_idle(state, 160, 0)
    assert state == IdleState(130, 0, 130)
    state = advance_idle(state, 170, 3)
    assert state == IdleState(170, 3, 170)
    state = advance_idle(IdleState(170, 9, 170), 180, 2)  # restarted, then 2 requests
    assert state == IdleState(180, 2, 180)


def idle(now, **kw):
    args = {
        "now": now,
        "idle_since": 0.0,
        "stop_after_minutes": 60,
        "counter_readable": True,
        "credential_available": True,
        "last_stop_attempt": None,
        "stop_retry": 600,
    }
    args.update(kw)
    return decide_idle_stop(**args)


def test_idle_stop_decision():
    assert idle(59 * 60).action == "wait"
    assert idle(59 * 60).minutes_left == pytest.approx(1)
    decision = idle(60 * 60)
    assert decision.action == "stop"
    assert "no proxy request for 60.0 minutes" in decision.reason
    assert idle(3 * 3600, stop_after_minutes=0).action == "off"


def test_idle_stop_held_or_impossible():
    assert idle(3600, counter_readable=False).action == "held"
    # an unreadable counter does not matter before the time is up
    assert idle(60, counter_readable=False).action == "wait"
    assert idle(3600, credential_available=False).action == "no_credential"


def test_idle_stop_is_retried_only_after_stop_retry():
    assert idle(4000, last_stop_attempt=3700).action == "retry_wait"
    assert idle(4300, last_stop_attempt=3700).action == "stop"


# -- uptime ---------------------------------------------------------------------------------------
def rnd(ts, **parts):
    return {"kind": "round", "ts": ts, "checks": checks(**parts)}


def test_uptime_is_the_fraction_of_rounds_up():
    records = [
        rnd(10),
        rnd(20, generation=GEN_FAIL),
        rnd(30, redis=DOWN),
        rnd(40),
        {"kind": "restart", "ts": 35, "component": "redis"},
        {"kind": "start", "ts": 5},
    ]
    result = uptime(records, now=40, window=3600, interval=10)
    assert result["fraction"] == 0.5
    assert result["rounds"] == 4
    assert result["up_rounds"] == 2
    assert result["parts"] == {"ollama": 1.0, "redis": 0.75, "proxy": 1.0, "generation": 0.75}
    assert result["first_ts"] == 10
    assert result["last_ts"] == 40
    # the monitor started 40 s before now: 4 rounds expected, 4 seen
    assert result["expected_rounds"] == 4
    assert result["coverage"] == 1.0


def test_uptime_window_excludes_older_rounds():
    records = [rnd(10, ollama=DOWN), rnd(100), rnd(110)]
    result = uptime(records, now=110, window=50, interval=10)
    assert result["fraction"] == 1.0
    assert result["rounds"] == 2
    assert result["expected_rounds"] == 5
    assert result["coverage"] == 0.4


def test_uptime_with_no_rounds():
    result = uptime([], now=100, window=60, interval=15)
    assert result["fraction"] is None
    assert result["coverage"] == 0.0


def test_restarts_summary():
    records = [
        {"kind": "restart", "ts": 100.0, "component": "proxy"},
        {"kind": "restart", "ts": 3500.0, "component": "ollama"},
        {"kind": "restart", "ts": 7000.0, "component": "ollama"},
        {"kind": "round", "ts": 7100.0},
    ]
    result = restarts_summary(records, now=7200.0, window=86400)
    assert result["last_hour"] == {"total": 1, "by_component": {"ollama": 1}}
    assert result["window"] == {"total": 3, "by_component": {"proxy": 1, "ollama": 2}}
    assert len(result["recent"]) == 3


# -- rotation -------------------------------------------------------------------------------------
def test_should_rotate():
    assert not should_rotate(0, 10_000, 1000)  # a record bigger than the limit still goes in
    assert not should_rotate(500, 500, 1000)
    assert should_rotate(501, 500, 1000)


def test_rotation_moves():
    assert rotation_moves("m.jsonl", 3) == [
        ("m.jsonl.3", None),
        ("m.jsonl.2", "m.jsonl.3"),
        ("m.jsonl.1", "m.jsonl.2"),
        ("m.jsonl", "m.jsonl.1"),
    ]
    assert rotation_moves("m", 1) == [("m.1", None), ("m", "m.1")]
    assert files_oldest_first("m", 2) == ["m.2", "m.1", "m"]


# -- durations ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800), ("1.5h", 5400)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-1h", "1y", "h", "24 hours"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


# -- findings -------------------------------------------------------------------------------------
def test_findings_in_plain_words():
    last = {
        "ts": 1000.0,
        "checks": checks(generation=GEN_FAIL, redis=DOWN),
        "disk": [{"path": "/workspace", "used_pct": 96.2}, {"path": "/", "used_pct": 40}],
        "memory": {"used_pct": 50},
    }
    restarts = {"last_hour": {"by_component": {"proxy": 14, "ollama": 1}}}
    assert findings(last, restarts, now=1010.0, interval=15) == [
        "Ollama answers but generation fails (HTTP 500: boom)",
        "Redis is down (refused)",
        "/workspace 96 % full",
        "ollama restarted 1 time in the last hour",
        "proxy restarted 14 times in the last hour",
    ]


def test_findings_stale_and_empty():
    assert findings(None, {}, now=0, interval=15) == ["the monitor has recorded nothing yet"]
    last = {"ts": 0.0, "checks": checks(generation=GEN_MISSING)}
    assert findings(last, {}, now=600.0, interval=15) == [
        "the last monitor record is 10 minutes old (is the monitor running?)",
        "the model m is missing from Ollama",
    ]
    assert findings({"ts": 0.0, "checks": checks()}, {}, now=1.0, interval=15) == []
