"""``vastllm status`` as pure functions: one row per instance, the table, the spending line and
the warnings, from what the API, /health, /metrics, the monitor and the tunnel said."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from vastllm.cli.pricing import hourly_cost, spend

IDLE_ROUTES = ("messages", "count_tokens")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[str, Any]:
    """Requests (routes that count as use) and the cache hit ratio from the proxy's /metrics."""
    requests = 0.0
    hit_ratio: float | None = None
    hits = misses = 0.0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, labels_text, value_text = match.groups()
        try:
            value = float(value_text)
        except ValueError:
            continue
        labels = dict(_LABEL.findall(labels_text or ""))
        if name == "vastllm_requests_total" and labels.get("route") in IDLE_ROUTES:
            status = labels.get("status", "")
            if not (status.isdigit() and int(status) >= 400):  # a scanner's 401s are no traffic
                requests += value
        elif name == "vastllm_cache_hit_ratio":
            hit_ratio = value
        elif name == "vastllm_cache_requests_total":
            if labels.get("result") == "hit":
                hits += value
            elif labels.get("result") == "miss":
                misses += value
    if hit_ratio is None and hits + misses > 0:
        hit_ratio = hits / (hits + misses)
    return {"requests": int(requests), "cache_hit_ratio": hit_ratio}


def _duration(hours: float) -> str:
    minutes = round(hours * 60)
    if minutes < 60:
        return f"{minutes}m"
    if minutes < 48 * 60:
        return f"{minutes // 60}h{minutes % 60:02d}m"
    return f"{minutes // (24 * 60)}d{(minutes // 60) % 24:02d}h"


def status_row(
    instance: Mapping[str, Any],
    now: float,
    *,
    health: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    monitor: Mapping[str, Any] | None = None,
    context_window: int | None = None,
    tunnel: str = "down",
    local_port: int | None = None,
) -> dict[str, Any]:
    """Everything ``status`` shows about one instance (JSON-ready)."""
    from ansible_collections.vastllm.stack.plugins.module_utils.vastai_hosts import (
        instance_status,
    )

    state = instance_status(instance)
    hours, spent = spend(instance.get("start_date"), now, instance.get("dph_total"))
    gpus = int(instance.get("num_gpus") or 0)
    gpu = str(instance.get("gpu_name") or "?")
    idle = (monitor or {}).get("idle") if monitor else None
    uptime = (monitor or {}).get("uptime") if monitor else None
    model = None
    if health:
        model = (
            (health.get("model") or {}) if isinstance(health.get("model"), Mapping) else {}
        ).get("name")
    return {
        "label": str(instance.get("label") or instance.get("id")),
        "id": instance.get("id"),
        "state": state,
        "gpu": f"{gpus}x {gpu}" if gpus else gpu,
        "dph": round(hourly_cost(instance, state), 4),
        "dph_running": float(instance.get("dph_total") or 0),
        "hours": round(hours, 3),
        "spent": round(spent, 4),
        "proxy": (health or {}).get("status") if health else None,
        "model": model,
        "context_window": context_window,
        "cache_hit_ratio": (metrics or {}).get("cache_hit_ratio") if metrics else None,
        "requests": (metrics or {}).get("requests") if metrics else None,
        "uptime_percent": (uptime or {}).get("percent") if isinstance(uptime, Mapping) else None,
        "idle": dict(idle) if isinstance(idle, Mapping) else None,
        "tunnel": tunnel,
        "local_port": local_port,
    }


def _idle_text(idle: Mapping[str, Any] | None) -> str:
    if not idle:
        return "-"
    if not idle.get("enabled"):
        return "off"
    since = idle.get("minutes_since_last_request")
    until = idle.get("minutes_until_stop")
    if isinstance(since, int | float) and isinstance(until, int | float):
        return f"idle {since:.0f}m, stop in {until:.0f}m"
    return str(idle.get("action") or "-")


def _cell(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


COLUMNS = (
    ("LABEL", "label"), ("STATE", "state"), ("GPU", "gpu"), ("$/H", "dph"), ("UP", "hours"),
    ("SPENT", "spent"), ("PROXY", "proxy"), ("MODEL", "model"), ("CTX", "context_window"),
    ("HIT", "cache_hit_ratio"), ("REQS", "requests"), ("UPTIME", "uptime_percent"),
    ("IDLE TIMER", "idle"), ("TUNNEL", "tunnel"),
)  # fmt: skip


def _render(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if key == "dph":
        return _cell(value, "${:.3f}")
    if key == "hours":
        return _duration(float(value or 0)) if row.get("state") != "unknown" else "-"
    if key == "spent":
        return _cell(value, "${:.2f}")
    if key == "cache_hit_ratio":
        return _cell(None if value is None else value * 100, "{:.0f}%")
    if key == "uptime_percent":
        return _cell(value, "{:.1f}%")
    if key == "idle":
        return _idle_text(value)
    if key == "tunnel" and value == "up" and row.get("local_port"):
        return f"up :{row['local_port']}"
    return _cell(value)


def render_table(rows: Sequence[Mapping[str, Any]]) -> str:
    header = [title for title, _ in COLUMNS]
    body = [[_render(row, key) for _, key in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip()
             for r in [header, *body]]  # fmt: skip
    return "\n".join(lines)


def spending_line(rows: Sequence[Mapping[str, Any]], prefix: str) -> str:
    running = [r for r in rows if r.get("state") in ("running", "loading")]
    per_hour = sum(float(r.get("dph") or 0) for r in rows)
    spent = sum(float(r.get("spent") or 0) for r in rows)
    return (
        f"spending ({prefix}*): {len(rows)} instance(s), {len(running)} running, "
        f"${per_hour:.3f}/h now, ${spent:.2f} so far"
    )


def warnings(rows: Sequence[Mapping[str, Any]], idle_minutes: float) -> list[str]:
    """A warning for each running instance without traffic (the GPU is billed for nothing)."""
    out = []
    for row in rows:
        if row.get("state") != "running":
            continue
        idle = row.get("idle") or {}
        since = idle.get("minutes_since_last_request") if isinstance(idle, Mapping) else None
        if isinstance(since, int | float) and since >= idle_minutes:
            out.append(
                f"warning: {row['label']} runs at ${float(row.get('dph') or 0):.3f}/h with no "
                f"request for {since:.0f} min (vastllm down --label {row['label']} stops it)"
            )
        elif (
            since is None
            and row.get("requests") == 0
            and float(row.get("hours") or 0) * 60 >= (idle_minutes)
        ):
            out.append(
                f"warning: {row['label']} runs at ${float(row.get('dph') or 0):.3f}/h and has "
                f"served no request (vastllm down --label {row['label']} stops it)"
            )
    return out
