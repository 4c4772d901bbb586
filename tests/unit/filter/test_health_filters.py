"""Filters of verify.yml and diagnose.yml (plugins/filter/health.py): /metrics parsing, figures
against targets, findings in plain words, Markdown."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from ansible_collections.vastllm.stack.plugins.filter.health import (
    FilterModule,
    diagnose_findings,
    diagnose_markdown,
    prometheus_parse,
    prometheus_value,
    supervisor_status,
    verify_failed,
    verify_figures,
    verify_lines,
)

METRICS = """# HELP vastllm_requests_total Requests.
# TYPE vastllm_requests_total counter
vastllm_requests_total{route="messages",status="200"} 40
vastllm_requests_total{route="health",status="200"} 3
vastllm_cache_requests_total{result="hit"} 30
vastllm_cache_requests_total{result="miss"} 10
vastllm_cache_requests_total{result="bypass"} 1
vastllm_cache_hit_ratio 0.750000
weird{label="a \\"quoted\\" value"} 1.5 1764496800000
not a sample line
"""

MODEL = "qwen2.5-coder:1.5b"


def healthy_probe() -> dict[str, Any]:
    return {
        "ollama": {
            "version": {"status": 200, "json": {"version": "0.21.0"}},
            "tags": {"status": 200, "json": {"models": [{"name": MODEL}]}},
            "ps": {"status": 200, "json": {"models": [{"name": MODEL, "context_length": 65536}]}},
        },
        "proxy": {
            "liveness": {"status": 200, "json": {"status": "ok"}},
            "health": {
                "status": 200,
                "json": {
                    "status": "ok",
                    "version": "0.1.0",
                    "model": {"name": MODEL, "present": True, "loaded": True},
                    "redis": {"enabled": True, "reachable": True},
                    "context_window": {"configured": 65536, "served": 65536, "loaded": 65536},
                },
            },
            "metrics": {"status": 200, "text": METRICS},
        },
        "messages": [
            {"status": 200, "cache": "miss", "seconds": 0.8, "text": "OK"},
            {"status": 200, "cache": "hit", "seconds": 0.01, "text": "OK"},
        ],
        "monitor_report": {
            "rc": 0,
            "json": {
                "uptime": {
                    "fraction": 0.99,
                    "rounds": 300,
                    "coverage": 1.0,
                    "first_ts": 1000.0,
                    "last_ts": 1000.0 + 2 * 3600,
                },
                "restarts": {"last_hour": {"by_component": {}}, "window": {"by_component": {}}},
                "findings": [],
                "last_record": {"version": "0.1.0"},
            },
        },
        "monitor_check": {
            "rc": 0,
            "json": {"up": True, "checks": {"generation": {"status": "ok"}}},
        },
        "services": {
            "stdout": "ollama RUNNING pid 7, uptime 0:10:00\n"
            "vastllm-redis RUNNING pid 8, uptime 0:10:00\n"
            "vastllm-proxy RUNNING pid 9, uptime 0:10:00\n"
            "vastllm-monitor RUNNING pid 10, uptime 0:10:00\n"
        },
        "disk": [
            {
                "path": "/workspace",
                "total_bytes": 10**11,
                "free_bytes": 5 * 10**10,
                "used_pct": 50.0,
            }
        ],
        "memory": {"total_bytes": 10**10, "available_bytes": 5 * 10**9, "used_pct": 50.0},
        "gpu": {"stdout": "0, NVIDIA RTX 4090, 20000, 24564, 87\n"},
        "ports": [{"address": "127.0.0.1", "port": 11434}, {"address": "0.0.0.0", "port": 8000}],
        "logs": {"ollama": ["[GIN] 200 /api/version"]},
    }


PROGRAMS = ["ollama", "vastllm-redis", "vastllm-proxy", "vastllm-monitor"]


def by_name(figures: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in figures}


def test_prometheus_parse_reads_samples_labels_and_skips_junk() -> None:
    parsed = prometheus_parse(METRICS)
    assert prometheus_value(parsed, "vastllm_cache_requests_total", result="hit") == 30
    assert prometheus_value(parsed, "vastllm_requests_total") == 43
    assert parsed["vastllm_cache_hit_ratio"][0]["value"] == 0.75
    assert parsed["weird"][0]["labels"] == {"label": 'a "quoted" value'}
    assert "not" not in parsed
    assert prometheus_parse("") == {}
    assert prometheus_value({}, "missing") == 0.0


def test_a_healthy_host_meets_every_target() -> None:
    figures = verify_figures(healthy_probe(), MODEL, "12.5")
    assert verify_failed(figures) == []
    named = by_name(figures)
    assert named["cache hit ratio since start"]["measured"] == 0.75
    assert named["model ready time"] == {**named["model ready time"], "measured": 12.5, "ok": True}
    assert named["hit latency"]["ok"] is True
    assert named["uptime (24 h, monitor)"]["measured"] == 0.99
    lines = verify_lines(figures)
    assert any(line.startswith("[ ok ] miss latency: 0.8 s (target < 10.0 s)") for line in lines)
    assert any("cache hit ratio since start: 0.75 (target > 0.7)" in line for line in lines)


@pytest.mark.parametrize(
    ("change", "failed"),
    [
        (
            lambda p: p["messages"][1].update(cache="miss"),
            {"repeat answered from cache", "hit latency"},
        ),
        (lambda p: p["messages"][0].update(seconds=12.0), {"miss latency"}),
        (
            lambda p: p["proxy"]["health"]["json"]["redis"].update(reachable=False),
            {"Redis healthy"},
        ),
        (
            lambda p: p["ollama"]["tags"]["json"].update(models=[]),
            {"model listed"},
        ),
        (
            lambda p: p["proxy"]["metrics"].update(
                text=METRICS.replace('"hit"} 30', '"hit"} 10').replace('"miss"} 10', '"miss"} 30')
            ),
            {"cache hit ratio since start"},
        ),
        (
            lambda p: p["monitor_report"]["json"]["uptime"].update(fraction=0.9),
            {"uptime (24 h, monitor)"},
        ),
    ],
)
def test_a_missed_target_fails_its_figure(change: Any, failed: set[str]) -> None:
    probe = healthy_probe()
    change(probe)
    assert set(verify_failed(verify_figures(probe, MODEL))) == failed


def test_too_little_data_is_not_a_miss() -> None:
    probe = healthy_probe()
    probe["proxy"]["metrics"]["text"] = METRICS.replace('"hit"} 30', '"hit"} 1').replace(
        '"miss"} 10', '"miss"} 1'
    )
    probe["monitor_report"]["json"]["uptime"]["fraction"] = None
    named = by_name(verify_figures(probe, MODEL, None))
    assert named["cache hit ratio since start"]["ok"] is None
    assert "only 2 cache lookups" in named["cache hit ratio since start"]["note"]
    assert named["uptime (24 h, monitor)"]["ok"] is None
    assert named["model ready time"]["ok"] is None
    assert any(line.startswith("[ -- ]") for line in verify_lines(list(named.values())))


def test_uptime_of_a_short_history_is_not_judged() -> None:
    probe = healthy_probe()
    probe["monitor_report"]["json"]["uptime"].update(fraction=0.8, rounds=5, last_ts=1010.0)
    named = by_name(verify_figures(probe, MODEL))
    assert named["uptime (24 h, monitor)"]["ok"] is None
    assert "judged once the records span 60 min" in named["uptime (24 h, monitor)"]["note"]
    probe["monitor_report"] = {"rc": 1, "json": None, "stderr": "boom"}
    assert verify_failed(verify_figures(probe, MODEL)) == ["uptime (24 h, monitor)"]


def test_targets_can_be_overridden() -> None:
    figures = verify_figures(healthy_probe(), MODEL, 12.5, {"miss_seconds_max": 0.5})
    assert verify_failed(figures) == ["miss latency"]


def test_supervisor_status() -> None:
    assert supervisor_status("ollama  STOPPED   Nov 30 11:00 AM\nbad\n") == {
        "ollama": {"state": "STOPPED", "detail": "Nov 30 11:00 AM"}
    }


def test_a_healthy_host_has_no_findings() -> None:
    assert diagnose_findings(healthy_probe(), PROGRAMS) == []


def test_findings_name_each_fault() -> None:
    probe = healthy_probe()
    probe["services"]["stdout"] = probe["services"]["stdout"].replace(
        "vastllm-redis RUNNING pid 8, uptime 0:10:00", "vastllm-redis STOPPED Nov 30 11:00 AM"
    )
    probe["proxy"]["health"]["json"]["redis"]["reachable"] = False
    probe["proxy"]["health"]["json"]["status"] = "degraded"
    probe["monitor_check"]["json"]["checks"]["generation"] = {
        "status": "failed",
        "error": "HTTP 500: wedged",
    }
    probe["ollama"]["tags"]["json"]["models"] = []
    probe["disk"][0].update(used_pct=96.4, free_bytes=10**8)
    probe["monitor_report"]["json"]["findings"] = [
        "Redis is down (x)",
        "ollama restarted 14 times in the last hour",
    ]
    found = diagnose_findings(probe, PROGRAMS)
    assert found == [
        "vastllm-redis is stopped",
        "Ollama answers but generation fails (HTTP 500: wedged)",
        f"the model {MODEL} is missing from Ollama",
        "Redis is down: the proxy answers uncached",
        "the proxy reports degraded",
        "/workspace 96 % full (0.1 GB free)",
        "ollama restarted 14 times in the last hour",
    ]


def test_ollama_down_and_no_monitor() -> None:
    probe = healthy_probe()
    probe["ollama"]["version"] = {"status": -1, "error": "ConnectionRefusedError: refused"}
    probe["monitor_report"] = {"rc": -1, "json": None, "stderr": "vastllm-monitor not installed"}
    found = diagnose_findings(probe, PROGRAMS)
    assert found[0].startswith("Ollama does not answer /api/version (ConnectionRefusedError")
    assert found[-1] == "no monitor report (vastllm-monitor not installed)"


def test_markdown_has_every_section() -> None:
    probe = healthy_probe()
    doc = {"host": "h1", "time": "2026-11-30T11:00:00Z", "findings": ["x is down"], "probe": probe}
    text = diagnose_markdown(copy.deepcopy(doc))
    headings = ["# vastllm diagnosis of h1", "## Findings", "- x is down", "## Services"]
    headings += ["## Versions", "## Models", "## Disk and memory", "## GPU", "NVIDIA RTX 4090"]
    headings += ["## Listening ports", "| 0.0.0.0 | 8000 |", "## Monitor", "### ollama"]
    for heading in headings:
        assert heading in text, heading
    assert "Context length: configured 65536" in text
    probe["gpu"] = None
    assert "no nvidia-smi" in diagnose_markdown(doc)


def test_filter_module_lists_the_filters() -> None:
    assert set(FilterModule().filters()) >= {
        "prometheus_parse",
        "verify_figures",
        "verify_failed",
        "verify_lines",
        "diagnose_findings",
        "diagnose_markdown",
    }
