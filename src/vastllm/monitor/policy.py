"""The monitor's decisions as pure functions of plain values (no I/O, no clock).

Health of a round, consecutive-failure counting, the restart decision with its cool-down, when the
generation probe is due, the request counter read from the proxy's ``/metrics``, the idle timer and
the stop decision, uptime over a window, the rotation policy, and durations like ``24h``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

COMPONENTS = ("ollama", "redis", "proxy")
HOUR = 3600.0


# -- health of one round --------------------------------------------------------------------------
def round_health(checks: Mapping[str, Mapping[str, Any]]) -> dict[str, bool | None]:
    """Health of each part in one round record's ``checks``.

    ``ollama``, ``redis``, ``proxy`` and ``generation`` are ``True``/``False``, or ``None`` when
    the part is not checked (disabled by configuration: it does not count against uptime).
    ``generation`` is the outcome of the most recent generation probe (carried between probes);
    a probe that has not run yet counts as ``False`` (nothing proves generations work).
    """
    health: dict[str, bool | None] = {}
    for name in (*COMPONENTS, "generation"):
        check = checks.get(name) or {}
        status = check.get("status")
        if status == "disabled":
            health[name] = None
        else:
            health[name] = check.get("ok") is True
    return health


def round_up(checks: Mapping[str, Mapping[str, Any]]) -> bool:
    """A round is *up* when Ollama, Redis, the proxy and the last generation probe are healthy
    (parts disabled by configuration are left out)."""
    return all(value is not False for value in round_health(checks).values())


def restartable_failures(checks: Mapping[str, Mapping[str, Any]]) -> dict[str, bool]:
    """Which components failed in a way a restart can fix.

    Ollama fails when ``/api/version`` fails, or when the generation probe failed (a wedged
    Ollama) — but not when the probe found the model missing (a restart does not bring it back:
    ``recover.yml`` pulls it). Redis fails when PING fails, the proxy when ``/health/liveness``
    does. Disabled checks never fail.
    """
    ollama = checks.get("ollama") or {}
    generation = checks.get("generation") or {}
    failed = {
        "ollama": ollama.get("status") != "disabled" and ollama.get("ok") is not True,
        "redis": _check_failed(checks.get("redis")),
        "proxy": _check_failed(checks.get("proxy")),
    }
    if generation.get("status") == "failed":
        failed["ollama"] = True
    return failed


def _check_failed(check: Mapping[str, Any] | None) -> bool:
    check = check or {}
    return check.get("status") != "disabled" and check.get("ok") is not True


def count_failures(previous: Mapping[str, int], failed: Mapping[str, bool]) -> dict[str, int]:
    """Consecutive unhealthy rounds per component: +1 on a failure, back to 0 on a success."""
    return {name: previous.get(name, 0) + 1 if failed.get(name) else 0 for name in COMPONENTS}


@dataclass(frozen=True, slots=True)
class RestartDecision:
    # "none" (healthy or not failing long enough), "restart", "cooldown", "limit", "no_command"
    action: str
    reason: str


def decide_restart(
    component: str,
    failures: int,
    *,
    threshold: int,
    now: float,
    restart_times: Sequence[float],
    cooldown: float,
    max_per_hour: int,
    has_command: bool,
) -> RestartDecision:
    """Restart a component after ``threshold`` consecutive failures, unless it was restarted less
    than ``cooldown`` seconds ago or ``max_per_hour`` times in the last hour, or no command is
    configured for it."""
    if failures < threshold:
        return RestartDecision("none", "")
    why = f"{component} unhealthy for {failures} consecutive checks (threshold {threshold})"
    if not has_command:
        return RestartDecision("no_command", f"{why}; no restart command configured")
    recent = [t for t in restart_times if now - HOUR < t <= now]
    if recent and now - max(recent) < cooldown:
        wait = cooldown - (now - max(recent))
        return RestartDecision(
            "cooldown", f"{why}; restarted {now - max(recent):.0f}s ago, cool-down {wait:.0f}s left"
        )
    if len(recent) >= max_per_hour:
        return RestartDecision(
            "limit", f"{why}; already restarted {len(recent)} times in the last hour (limit)"
        )
    return RestartDecision("restart", why)


def prune_times(times: Iterable[float], now: float, keep: float = HOUR) -> list[float]:
    """The timestamps of the last ``keep`` seconds (restart history kept in the state file)."""
    return sorted(t for t in times if now - keep < t <= now)


# -- generation probe -----------------------------------------------------------------------------
def probe_due(
    now: float, last_at: float | None, last_ok: bool | None, interval: float, ollama_up: bool
) -> bool:
    """Probe when Ollama answers and: never probed, the last probe failed (retry every round),
    or ``interval`` seconds have passed. ``interval`` 0 disables the probe."""
    if interval <= 0 or not ollama_up:
        return False
    if last_at is None or last_ok is not True:
        return True
    return now - last_at >= interval


def classify_probe(status: int | None, error: str | None, body: Any) -> tuple[str, str | None]:
    """A generation probe's outcome: ("ok", None), ("model_missing", why) or ("failed", why).

    ``status`` is the HTTP status (None when no answer came: timeout, connection refused).
    """
    if status is None:
        return "failed", error or "no answer"
    if status == 404:
        return "model_missing", _ollama_error(body) or "model not found"
    if status != 200:
        return "failed", f"HTTP {status}: {_ollama_error(body) or 'error'}"
    if not isinstance(body, dict) or body.get("done") is not True:
        return "failed", "answer is not a finished generation"
    return "ok", None


def _ollama_error(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])[:300]
    return None


# -- requests seen by the proxy -------------------------------------------------------------------
_SAMPLE = re.compile(r"^vastllm_requests_total\{([^}]*)\}\s+([0-9.eE+-]+)\s*$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def requests_from_metrics(text: str, routes: Iterable[str]) -> int | None:
    """Sum of ``vastllm_requests_total`` over ``routes`` in Prometheus text, counting only the
    answers with ``status`` below 400; ``None`` when the text holds no request counter family at
    all (not the proxy's metrics).

    Refused requests (401 without the key, 413, 400, ...) do not count: the proxy records a
    key-less ``POST /v1/messages`` under the ``messages`` route too, and a scanner on a public
    port would otherwise restart the idle period forever. A sample without a numeric ``status``
    label is not counted either."""
    wanted = set(routes)
    total = 0
    family = False
    for line in text.splitlines():
        if line.startswith("# TYPE vastllm_requests_total"):
            family = True
            continue
        match = _SAMPLE.match(line.strip())
        if not match:
            continue
        family = True
        labels = dict(_LABEL.findall(match.group(1)))
        status = labels.get("status", "")
        if labels.get("route") not in wanted or not status.isdigit() or int(status) >= 400:
            continue
        try:
            total += int(float(match.group(2)))
        except ValueError:
            continue
    return total if family else None


# -- idle timer and auto-stop ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class IdleState:
    # when the idle period began: the last round in which the request counter went up, or the
    # start of the container (a fresh start counts as use)
    idle_since: float
    # the counter last read (None before the first reading)
    last_total: int | None = None
    # when the last request was seen (None: none seen since the container started)
    last_request_at: float | None = None


def advance_idle(state: IdleState, now: float, total: int | None) -> IdleState:
    """Fold one reading of the request counter into the idle state.

    The counter went up → a request was seen: the idle period starts again now. It went down →
    the proxy restarted (counters start at 0): requests were seen if it is above 0. No reading
    (``None``: the proxy is down, nobody can be served) → nothing changes, the timer runs on.
    """
    if total is None:
        return state
    if state.last_total is None:
        return IdleState(state.idle_since, total, state.last_request_at)
    if total > state.last_total or (total < state.last_total and total > 0):
        return IdleState(now, total, now)
    return IdleState(state.idle_since, total, state.last_request_at)


@dataclass(frozen=True, slots=True)
class IdleDecision:
    # "off", "wait", "stop", "retry_wait" (a stop was requested recently), "held" (the counter
    # cannot be read although the proxy answers: requests cannot be ruled out), "no_credential"
    action: str
    idle_minutes: float
    minutes_left: float | None
    reason: str


def decide_idle_stop(
    *,
    now: float,
    idle_since: float,
    stop_after_minutes: float,
    counter_readable: bool,
    credential_available: bool,
    last_stop_attempt: float | None,
    stop_retry: float,
) -> IdleDecision:
    """Stop the instance after ``stop_after_minutes`` (0 = never) without a proxy request."""
    idle = max(0.0, (now - idle_since) / 60.0)
    if stop_after_minutes <= 0:
        return IdleDecision("off", idle, None, "idle auto-stop is off")
    left = max(0.0, stop_after_minutes - idle)
    if idle < stop_after_minutes:
        return IdleDecision("wait", idle, left, "")
    reason = (
        f"no proxy request for {idle:.1f} minutes (idle auto-stop after {stop_after_minutes:g})"
    )
    if not counter_readable:
        return IdleDecision(
            "held", idle, left, f"{reason}, but the proxy's request counter cannot be read"
        )
    if not credential_available:
        return IdleDecision(
            "no_credential",
            idle,
            left,
            f"{reason}, but CONTAINER_ID/CONTAINER_API_KEY are not in PID 1's environment",
        )
    if last_stop_attempt is not None and now - last_stop_attempt < stop_retry:
        return IdleDecision("retry_wait", idle, left, f"{reason}; a stop was already requested")
    return IdleDecision("stop", idle, left, reason)


# -- uptime ---------------------------------------------------------------------------------------
def uptime(
    records: Iterable[Mapping[str, Any]], *, now: float, window: float, interval: float
) -> dict[str, Any]:
    """Uptime over the last ``window`` seconds from the round records.

    ``fraction`` = rounds that were up (``round_up``) / rounds recorded in the window (``None``
    when there is none). Per part: the fraction of the rounds in which it was checked and healthy.
    ``coverage`` = rounds recorded / rounds expected (window / interval, or the time since the
    earliest round given when that is shorter: a monitor that started within the window is not
    blamed for the time before), capped at 1: how much of the window the monitor saw.
    """
    start = now - window
    total = up = 0
    parts: dict[str, list[int]] = {name: [0, 0] for name in (*COMPONENTS, "generation")}
    first: float | None = None
    last: float | None = None
    earliest: float | None = None
    for record in records:
        if record.get("kind") != "round":
            continue
        ts = record.get("ts")
        if not isinstance(ts, int | float) or ts > now:
            continue
        earliest = ts if earliest is None else min(earliest, ts)
        if ts <= start:
            continue
        checks = record.get("checks") or {}
        total += 1
        up += round_up(checks)
        for name, healthy in round_health(checks).items():
            if healthy is not None:
                parts[name][0] += healthy
                parts[name][1] += 1
        first = ts if first is None else min(first, ts)
        last = ts if last is None else max(last, ts)
    span = window if earliest is None else min(window, now - earliest + interval)
    expected = max(1, math.floor(span / interval)) if interval > 0 else 1
    return {
        "fraction": up / total if total else None,
        "rounds": total,
        "up_rounds": up,
        "expected_rounds": expected,
        "coverage": min(1.0, total / expected) if total else 0.0,
        "parts": {name: (ok / n if n else None) for name, (ok, n) in parts.items()},
        "first_ts": first,
        "last_ts": last,
    }


def restarts_summary(
    records: Iterable[Mapping[str, Any]], *, now: float, window: float
) -> dict[str, Any]:
    """Restarts done (``kind: restart`` records that ran a command) in the last hour and window."""
    hour: dict[str, int] = {}
    span: dict[str, int] = {}
    recent: list[Mapping[str, Any]] = []
    for record in records:
        ts = record.get("ts")
        if record.get("kind") != "restart" or not isinstance(ts, int | float) or ts > now:
            continue
        component = str(record.get("component"))
        if ts > now - window:
            span[component] = span.get(component, 0) + 1
            recent.append(record)
        if ts > now - HOUR:
            hour[component] = hour.get(component, 0) + 1
    return {
        "last_hour": {"total": sum(hour.values()), "by_component": hour},
        "window": {"total": sum(span.values()), "by_component": span},
        "recent": [dict(r) for r in recent[-10:]],
    }


# -- rotation -------------------------------------------------------------------------------------
def should_rotate(current_size: int, incoming: int, max_bytes: int) -> bool:
    """Rotate before an append that would take a non-empty file beyond ``max_bytes``."""
    return current_size > 0 and current_size + incoming > max_bytes


def rotation_moves(name: str, max_files: int) -> list[tuple[str, str | None]]:
    """The renames of one rotation, in order: drop ``name.<max_files>``, shift ``.i`` → ``.i+1``,
    then ``name`` → ``name.1``. ``(src, None)`` means delete ``src``."""
    moves: list[tuple[str, str | None]] = [(f"{name}.{max_files}", None)]
    for index in range(max_files - 1, 0, -1):
        moves.append((f"{name}.{index}", f"{name}.{index + 1}"))
    moves.append((name, f"{name}.1"))
    return moves


def files_oldest_first(name: str, max_files: int) -> list[str]:
    """The record files in the order they were written: ``name.<max_files>`` … ``name``."""
    return [f"{name}.{i}" for i in range(max_files, 0, -1)] + [name]


# -- durations ------------------------------------------------------------------------------------
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": HOUR, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """``90``/``90s``, ``15m``, ``24h``, ``7d``, ``1w`` → seconds (> 0). ValueError otherwise."""
    match = _DURATION.match(text.lower())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 24h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


# -- findings -------------------------------------------------------------------------------------
def findings(
    last: Mapping[str, Any] | None,
    restarts: Mapping[str, Any],
    *,
    now: float,
    interval: float,
    disk_warn_pct: float = 90.0,
) -> list[str]:
    """Short plain-words findings from the last round record and the restart counts."""
    out: list[str] = []
    if last is None:
        return ["the monitor has recorded nothing yet"]
    age = now - float(last.get("ts") or 0)
    if age > max(3 * interval, 60):
        out.append(
            f"the last monitor record is {age / 60:.0f} minutes old (is the monitor running?)"
        )
    checks = last.get("checks") or {}
    ollama = checks.get("ollama") or {}
    generation = checks.get("generation") or {}
    if ollama.get("status") != "disabled" and ollama.get("ok") is not True:
        out.append("Ollama does not answer /api/version")
    elif generation.get("status") == "failed":
        out.append(f"Ollama answers but generation fails ({generation.get('error') or 'error'})")
    elif generation.get("status") == "model_missing":
        out.append(f"the model {generation.get('model')} is missing from Ollama")
    for name, label in (("redis", "Redis"), ("proxy", "the proxy")):
        check = checks.get(name) or {}
        if check.get("status") != "disabled" and check.get("ok") is not True:
            out.append(f"{label} is down ({check.get('error') or 'unhealthy'})")
    for disk in last.get("disk") or []:
        pct = disk.get("used_pct")
        if isinstance(pct, int | float) and pct >= disk_warn_pct:
            out.append(f"{disk.get('path')} {pct:.0f} % full")
    memory = last.get("memory") or {}
    if isinstance(memory.get("used_pct"), int | float) and memory["used_pct"] >= 95:
        out.append(f"memory {memory['used_pct']:.0f} % used")
    for component, count in sorted(
        (restarts.get("last_hour") or {}).get("by_component", {}).items()
    ):
        if count:
            times = "time" if count == 1 else "times"
            out.append(f"{component} restarted {count} {times} in the last hour")
    return out
