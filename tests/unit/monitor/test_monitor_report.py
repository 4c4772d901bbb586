"""The report from literal records: JSON shape for verify/diagnose, and the text layout."""

from __future__ import annotations

import json

from vastllm.monitor.report import build_report, idle_view, render_text

OK = {"ok": True, "status": "ok"}


def rnd(ts, up=True, **extra):
    checks = {
        "ollama": {"ok": True, "status": "ok", "version": "0.12.3"},
        "redis": OK if up else {"ok": False, "status": "down", "error": "refused"},
        "proxy": {"ok": True, "status": "ok", "health": {"status": "ok"}},
        "generation": {"ok": True, "status": "ok", "model": "m", "ms": 40.0, "ran": True},
    }
    record = {"kind": "round", "ts": ts, "up": up, "checks": checks, "interval_s": 15.0}
    record.update(extra)
    return record


def test_build_report():
    idle = {
        "enabled": True,
        "idle_since": 1000.0,
        "stop_after_minutes": 60,
        "last_request_at": 1000.0,
        "action": "wait",
        "credential": True,
    }
    records = [
        rnd(970.0),
        rnd(985.0, up=False),
        {"kind": "restart", "ts": 990.0, "component": "redis", "result": {"ok": True}},
        rnd(1000.0),
        rnd(1015.0, idle=idle, disk=[{"path": "/workspace", "used_pct": 97.0}]),
    ]
    report = build_report(
        records,
        records[-1],
        now=1000.0 + 20 * 60,
        window=86400,
        interval=30,
        state_dir="/s",
        idle_stop_minutes=5,
    )
    assert report["uptime"]["fraction"] == 0.75
    assert report["uptime"]["percent"] == 75.0
    assert report["interval_seconds"] == 15.0  # the running monitor's own
    assert report["restarts"]["last_hour"] == {"total": 1, "by_component": {"redis": 1}}
    assert report["last_record"]["ts"] == 1015.0
    assert report["last_record_age_seconds"] == 1185.0
    assert report["idle"]["minutes_since_last_request"] == 20.0
    assert report["idle"]["minutes_until_stop"] == 40.0
    assert report["idle"]["stop_after_minutes"] == 60  # from the record, not the default
    assert "/workspace 97 % full" in report["findings"]
    assert "redis restarted 1 time in the last hour" in report["findings"]
    json.dumps(report)
    text = render_text(report)
    assert "uptime      75.00 % (3 of 4 rounds up" in text
    assert "restarts    last hour 1 (redis 1); window 1 (redis 1)" in text
    assert "idle        20 min since the last request; auto-stop after 60 min (in 40 min)" in text
    assert "ollama ok 0.12.3" in text


def test_empty_report():
    report = build_report(
        [], None, now=0.0, window=3600, interval=15, state_dir="/s", idle_stop_minutes=0
    )
    assert report["uptime"]["fraction"] is None
    assert report["last_record"] is None
    assert report["findings"] == ["the monitor has recorded nothing yet"]
    text = render_text(report)
    assert "uptime      n/a" in text
    assert "last round  none" in text
    assert "idle        auto-stop off" in text


def test_idle_view_when_off_or_past_due():
    record = rnd(0.0, idle={"enabled": False, "idle_since": 0.0, "stop_after_minutes": 0})
    assert idle_view(record, now=600.0, idle_stop_minutes=60)["minutes_until_stop"] is None
    record = rnd(0.0, idle={"enabled": True, "idle_since": 0.0, "stop_after_minutes": 5})
    view = idle_view(record, now=600.0, idle_stop_minutes=60)
    assert view["minutes_since_last_request"] == 10.0
    assert view["minutes_until_stop"] == 0.0
