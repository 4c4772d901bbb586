"""``vastllm-monitor report``: uptime, restarts, the last round and the idle timer, from records.

``build_report`` is pure (records and a clock in, a JSON-able dict out); ``render_text`` lays it
out for a person.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vastllm.monitor.policy import findings, restarts_summary, uptime

REPORT_VERSION = 1


def build_report(
    records: Iterable[Mapping[str, Any]],
    last_round: Mapping[str, Any] | None,
    *,
    now: float,
    window: float,
    interval: float,
    state_dir: str,
    idle_stop_minutes: float,
) -> dict[str, Any]:
    """The report over ``window`` seconds up to ``now``.

    ``interval`` and ``idle_stop_minutes`` are the monitor's settings; the last round record's own
    values (what the running monitor uses) win over them.
    """
    rows = list(records)
    if last_round is not None:
        interval = float(last_round.get("interval_s") or interval)
    up = uptime(rows, now=now, window=window, interval=interval)
    restarts = restarts_summary(rows, now=now, window=window)
    stops = [dict(r) for r in rows if r.get("kind") == "idle_stop"]
    return {
        "v": REPORT_VERSION,
        "now": now,
        "window_seconds": window,
        "state_dir": state_dir,
        "interval_seconds": interval,
        "uptime": {
            **up,
            "percent": None if up["fraction"] is None else round(up["fraction"] * 100, 3),
        },
        "restarts": restarts,
        "last_record": dict(last_round) if last_round is not None else None,
        "last_record_age_seconds": (
            round(now - float(last_round.get("ts") or now), 1) if last_round is not None else None
        ),
        "idle": idle_view(last_round, now=now, idle_stop_minutes=idle_stop_minutes),
        "idle_stops": stops[-10:],
        "findings": findings(last_round, restarts, now=now, interval=interval),
    }


def idle_view(
    last_round: Mapping[str, Any] | None, *, now: float, idle_stop_minutes: float
) -> dict[str, Any]:
    """The idle timer as of ``now``, from the last round record."""
    idle = (last_round or {}).get("idle") or {}
    stop_after = idle.get("stop_after_minutes", idle_stop_minutes)
    stop_after = float(stop_after) if isinstance(stop_after, int | float) else idle_stop_minutes
    since = idle.get("idle_since")
    if not isinstance(since, int | float):
        return {
            "enabled": stop_after > 0 and idle.get("enabled") is not False,
            "stop_after_minutes": stop_after,
            "minutes_since_last_request": None,
            "minutes_until_stop": None,
            "last_request_at": None,
            "action": idle.get("action"),
        }
    idle_minutes = max(0.0, (now - float(since)) / 60)
    enabled = bool(idle.get("enabled", stop_after > 0)) and stop_after > 0
    return {
        "enabled": enabled,
        "stop_after_minutes": stop_after,
        # since the last request, or since the container started when none was seen
        "minutes_since_last_request": round(idle_minutes, 1),
        "minutes_until_stop": round(max(0.0, stop_after - idle_minutes), 1) if enabled else None,
        "last_request_at": idle.get("last_request_at"),
        "idle_since": since,
        "action": idle.get("action"),
        "credential": idle.get("credential"),
    }


def _pct(value: Any) -> str:
    return "n/a" if not isinstance(value, int | float) else f"{value * 100:.2f} %"


def _window_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _check_text(name: str, check: Mapping[str, Any]) -> str:
    status = check.get("status")
    if status == "disabled":
        return f"{name} not checked"
    if check.get("ok") is True:
        extra = ""
        if name == "ollama" and check.get("version"):
            extra = f" {check['version']}"
        if name == "generation":
            age = check.get("age_s")
            when = "now" if check.get("ran") else f"{(age or 0) / 60:.0f} min ago"
            extra = f" ({check.get('model')}, {when}, {check.get('ms')} ms)"
        if name == "proxy":
            extra = f" (/health {(check.get('health') or {}).get('status')})"
        return f"{name} ok{extra}"
    return f"{name} {status or 'down'} ({check.get('error') or 'unhealthy'})"


def render_text(report: Mapping[str, Any]) -> str:
    lines: list[str] = []
    up = report["uptime"]
    window = _window_text(float(report["window_seconds"]))
    lines.append(f"vastllm-monitor report, window {window} ({report['state_dir']})")
    if up["rounds"]:
        parts = ", ".join(f"{k} {_pct(v)}" for k, v in up["parts"].items() if v is not None)
        lines.append(
            f"uptime      {_pct(up['fraction'])} ({up['up_rounds']} of {up['rounds']} rounds up;"
            f" coverage {_pct(up['coverage'])}) — {parts}"
        )
    else:
        lines.append("uptime      n/a (no rounds recorded in the window)")
    restarts = report["restarts"]

    def by(counts: Mapping[str, int]) -> str:
        inner = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        return f" ({inner})" if inner else ""

    lines.append(
        f"restarts    last hour {restarts['last_hour']['total']}"
        f"{by(restarts['last_hour']['by_component'])};"
        f" window {restarts['window']['total']}{by(restarts['window']['by_component'])}"
    )
    last = report["last_record"]
    if last is None:
        lines.append("last round  none")
    else:
        state = "UP" if last.get("up") else "DOWN"
        checks = last.get("checks") or {}
        text = ", ".join(
            _check_text(name, checks.get(name) or {})
            for name in ("ollama", "generation", "redis", "proxy")
        )
        lines.append(f"last round  {report['last_record_age_seconds']:.0f}s ago: {state} — {text}")
        host: list[str] = []
        for disk in last.get("disk") or []:
            host.append(f"{disk['path']} {disk['used_pct']:.0f} % used")
        memory = last.get("memory") or {}
        if memory.get("used_pct") is not None:
            host.append(f"memory {memory['used_pct']:.0f} % used")
        for gpu in (last.get("gpu") or {}).get("gpus") or []:
            used, total = gpu.get("memory_used_mib"), gpu.get("memory_total_mib")
            mem = f"{used / 1024:.1f}/{total / 1024:.1f} GiB" if used and total else "n/a"
            host.append(f"GPU {gpu['name']} {mem}, {gpu.get('utilization_pct')} %")
        if host:
            lines.append("            " + "; ".join(host))
    idle = report["idle"]
    if not idle["enabled"]:
        lines.append("idle        auto-stop off")
    elif idle["minutes_since_last_request"] is None:
        lines.append(f"idle        auto-stop after {idle['stop_after_minutes']:g} min (no data)")
    else:
        lines.append(
            f"idle        {idle['minutes_since_last_request']:.0f} min since the last request;"
            f" auto-stop after {idle['stop_after_minutes']:g} min"
            f" (in {idle['minutes_until_stop']:.0f} min)"
        )
    found = report["findings"]
    lines.append("findings    " + ("none" if not found else found[0]))
    lines += ["            " + item for item in found[1:]]
    return "\n".join(lines) + "\n"
