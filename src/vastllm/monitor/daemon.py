"""The monitor loop: one round of checks every interval, restarts, the idle stop, the records."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from vastllm import __version__
from vastllm.monitor import actions, probes
from vastllm.monitor.config import COMPONENTS, MonitorConfig
from vastllm.monitor.policy import (
    IdleState,
    advance_idle,
    classify_probe,
    count_failures,
    decide_idle_stop,
    decide_restart,
    probe_due,
    prune_times,
    requests_from_metrics,
    restartable_failures,
    round_up,
)
from vastllm.monitor.records import RecordLog, load_state, save_state

RECORD_VERSION = 1
logger = logging.getLogger("vastllm.monitor")


class MonitorBusy(RuntimeError):
    """Another ``vastllm-monitor run`` holds the state directory."""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _read_key(path: str) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            key = handle.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return key or None


class Monitor:
    """One monitor over one state directory. ``act=False``: check and report only (no restart,
    no stop, nothing written)."""

    def __init__(
        self,
        config: MonitorConfig,
        *,
        act: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.act = act
        self.clock = clock
        self.log = RecordLog(config.state_dir, config.max_bytes, config.max_files)
        self.stop_event = threading.Event()
        self.failures: dict[str, int] = dict.fromkeys(COMPONENTS, 0)
        self.decisions: dict[str, str] = {}
        self._lock_fd: int | None = None
        state = load_state(config.state_dir)
        now = clock()
        self.token = probes.container_start_token(config.pid1_environ)
        self.restarts: dict[str, list[float]] = {
            name: prune_times(_floats(state.get("restarts", {}).get(name)), now)
            for name in COMPONENTS
        }
        probe = state.get("probe")
        self.probe: dict[str, Any] | None = probe if isinstance(probe, dict) else None
        idle = _dict(state.get("idle"))
        if state.get("container") == self.token and _is_number(idle.get("idle_since")):
            # the same container as before the monitor (re)started: the idle timer runs on
            self.idle = IdleState(
                float(idle["idle_since"]),
                idle.get("last_total") if isinstance(idle.get("last_total"), int) else None,
                float(idle["last_request_at"]) if _is_number(idle.get("last_request_at")) else None,
            )
            last_stop = state.get("last_stop_attempt")
            self.last_stop_attempt = (
                float(last_stop) if isinstance(last_stop, int | float) else None
            )
        else:
            # a new container (or the first start): starting it counts as use
            self.idle = IdleState(now)
            self.last_stop_attempt = None

    # -- lifecycle --------------------------------------------------------------------------------
    def lock(self) -> None:
        """Hold ``monitor.lock`` in the state dir (one acting monitor at a time)."""
        self.log.ensure_dir()
        fd = os.open(os.path.join(self.config.state_dir, "monitor.lock"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise MonitorBusy(
                f"another vastllm-monitor run holds {self.config.state_dir}/monitor.lock"
            ) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        now = float(record.get("ts") or self.clock())
        full = {"v": RECORD_VERSION, "kind": record.pop("kind"), "ts": now, "time": iso(now)}
        full.update(record)
        if self.act:
            self.log.append(full)
        return full

    def start_record(self) -> dict[str, Any]:
        return self.record(
            {
                "kind": "start",
                "version": __version__,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "config": self.config.public(),
            }
        )

    def save(self) -> None:
        if not self.act:
            return
        save_state(
            self.config.state_dir,
            {
                "container": self.token,
                "restarts": self.restarts,
                "probe": self.probe,
                "idle": {
                    "idle_since": self.idle.idle_since,
                    "last_total": self.idle.last_total,
                    "last_request_at": self.idle.last_request_at,
                },
                "last_stop_attempt": self.last_stop_attempt,
            },
        )

    def run(self, rounds: int | None = None) -> int:
        """Rounds every ``interval`` seconds until stopped (or ``rounds`` rounds); exit code."""
        interval = self.config.interval
        self.start_record()
        done = 0
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            try:
                self.run_round()
            except Exception:
                logger.exception("a monitor round failed")
            done += 1
            if rounds is not None and done >= rounds:
                break
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # a slow round: skip the missed ticks
                next_at = now
            self.stop_event.wait(next_at - now)
        return 0

    # -- one round --------------------------------------------------------------------------------
    def run_round(self) -> dict[str, Any]:
        cfg = self.config
        started = time.perf_counter()
        now = self.clock()
        checks: dict[str, dict[str, Any]] = {
            "ollama": probes.check_ollama(cfg.ollama_url, cfg.check_timeout),
            "redis": probes.check_redis(cfg.redis_url, cfg.check_timeout),
        }
        proxy = probes.check_proxy(
            cfg.proxy_url, cfg.check_timeout, _read_key(cfg.proxy_api_key_file)
        )
        metrics = proxy.pop("_metrics", None)
        checks["proxy"] = proxy
        checks["generation"] = self._generation(now, checks)
        record: dict[str, Any] = {
            "kind": "round",
            "ts": now,
            "interval_s": cfg.interval,
            "checks": checks,
        }
        record["up"] = round_up(checks)
        failed = restartable_failures(checks)
        self.failures = count_failures(self.failures, failed)
        record["failures"] = dict(self.failures)
        record["actions"] = self._restarts(now)
        paths = [cfg.state_dir, *(p for p in cfg.disk_paths if os.path.exists(p))]
        record["disk"] = [d for d in (probes.disk(p) for p in dict.fromkeys(paths)) if d]
        record["memory"] = probes.memory()
        record["gpu"] = probes.gpu(cfg.nvidia_smi)
        record["idle"] = self._idle(now, proxy, metrics)
        record["round_ms"] = round((time.perf_counter() - started) * 1000, 1)
        full = self.record(record)
        self.save()
        return full

    def _generation(self, now: float, checks: dict[str, dict[str, Any]]) -> dict[str, Any]:
        cfg = self.config
        if cfg.probe_interval <= 0:
            return {"ok": None, "status": "disabled"}
        if checks["ollama"].get("ok") is not True:
            self.probe = None  # probe again as soon as Ollama answers
            return {"ok": False, "status": "not_run", "error": "Ollama does not answer"}
        last = self.probe or {}
        last_at = float(last["at"]) if _is_number(last.get("at")) else None
        if not probe_due(now, last_at, last.get("ok"), cfg.probe_interval, True):
            carried = dict(last)
            carried["ran"] = False
            carried["age_s"] = round(now - float(last_at or now), 1)
            return carried
        model = cfg.model or (checks["proxy"].get("health") or {}).get("model") or ""
        if not model:
            return {
                "ok": False,
                "status": "skipped",
                "error": "no model: set VASTLLM_MONITOR_MODEL (the proxy names none)",
            }
        result, body = probes.generation_probe(
            cfg.ollama_url, str(model), cfg.probe_prompt, cfg.probe_timeout
        )
        status, error = classify_probe(result.status, result.error, body)
        probe: dict[str, Any] = {
            "ok": status == "ok",
            "status": status,
            "model": model,
            "at": now,
            "ms": result.ms,
            "ran": True,
        }
        if error:
            probe["error"] = error
        self.probe = {k: v for k, v in probe.items() if k != "ran"}
        return probe

    def _restarts(self, now: float) -> list[dict[str, Any]]:
        cfg = self.config
        out: list[dict[str, Any]] = []
        for component in COMPONENTS:  # dependency order: Ollama, Redis, the proxy
            command = cfg.restart_command(component)
            decision = decide_restart(
                component,
                self.failures[component],
                threshold=cfg.failure_threshold,
                now=now,
                restart_times=self.restarts[component],
                cooldown=cfg.restart_cooldown,
                max_per_hour=cfg.restart_max_per_hour,
                has_command=bool(command),
            )
            if decision.action != self.decisions.get(component, "none"):
                if decision.action not in ("none", "restart"):
                    logger.warning("%s", decision.reason)
                self.decisions[component] = decision.action
            if decision.action == "none":
                continue
            if decision.action != "restart" or not self.act:
                action = decision.action if self.act else f"would_{decision.action}"
                out.append({"component": component, "action": action, "reason": decision.reason})
                continue
            logger.warning("restarting %s: %s", component, decision.reason)
            result = actions.run_restart(command, cfg.restart_timeout)
            self.restarts[component] = prune_times([*self.restarts[component], now], now)
            self.failures[component] = 0
            if component == "ollama":
                self.probe = None
            self.record(
                {
                    "kind": "restart",
                    "ts": now,
                    "component": component,
                    "reason": decision.reason,
                    "command": list(command),
                    "result": result,
                }
            )
            level = logging.WARNING if result["ok"] else logging.ERROR
            logger.log(level, "restart of %s: %s", component, _result_text(result))
            out.append({"component": component, "action": "restart", "reason": decision.reason})
        return out

    def _idle(
        self, now: float, proxy: dict[str, Any], metrics: probes.HttpResult | None
    ) -> dict[str, Any]:
        cfg = self.config
        if not cfg.proxy_url:
            return {"enabled": False, "action": "off", "reason": "no proxy to count requests"}
        total: int | None = None
        readable = True
        error = None
        if proxy.get("ok") is True:
            if metrics is not None and metrics.status == 200:
                total = requests_from_metrics(
                    metrics.body.decode(errors="replace"), cfg.idle_routes
                )
            if total is None:
                readable = False
                error = "cannot read the request counter from /metrics" + (
                    f" (HTTP {metrics.status})" if metrics is not None and metrics.status else ""
                )
        self.idle = advance_idle(self.idle, now, total)
        credential, why = (None, "")
        if cfg.idle_stop_minutes > 0:
            credential, why = probes.read_credential(cfg.pid1_environ)
        decision = decide_idle_stop(
            now=now,
            idle_since=self.idle.idle_since,
            stop_after_minutes=cfg.idle_stop_minutes,
            counter_readable=readable,
            credential_available=credential is not None,
            last_stop_attempt=self.last_stop_attempt,
            stop_retry=cfg.stop_retry,
        )
        idle: dict[str, Any] = {
            "enabled": cfg.idle_stop_minutes > 0,
            "action": decision.action if self.act or decision.action != "stop" else "would_stop",
            "requests_total": total,
            "idle_since": self.idle.idle_since,
            "last_request_at": self.idle.last_request_at,
            "idle_minutes": round(decision.idle_minutes, 2),
            "stop_after_minutes": cfg.idle_stop_minutes,
            "minutes_until_stop": None
            if decision.minutes_left is None
            else round(decision.minutes_left, 2),
            "credential": None if cfg.idle_stop_minutes <= 0 else credential is not None,
        }
        if error:
            idle["error"] = error
        if decision.reason:
            idle["reason"] = decision.reason
        if why and decision.action == "no_credential":
            idle["credential_error"] = why
        if decision.action == "stop" and credential is not None and self.act:
            self._stop(now, decision.reason, credential)
        return idle

    def _stop(self, now: float, reason: str, credential: probes.Credential) -> None:
        cfg = self.config
        logger.warning("stopping instance %s: %s", credential.instance_id, reason)
        self.record(
            {
                "kind": "idle_stop",
                "ts": now,
                "phase": "requested",
                "instance_id": credential.instance_id,
                "reason": reason,
                "api_url": cfg.vastai_url,
            }
        )
        self.last_stop_attempt = now
        self.save()  # the attempt survives a monitor killed by the stop itself
        result = actions.stop_instance(cfg.vastai_url, credential)
        self.record(
            {
                "kind": "idle_stop",
                "ts": self.clock(),
                "phase": "result",
                "instance_id": credential.instance_id,
                "result": result,
            }
        )
        level = logging.WARNING if result["ok"] else logging.ERROR
        logger.log(level, "stop of instance %s: %s", credential.instance_id, _result_text(result))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _floats(value: Any) -> list[float]:
    if not isinstance(value, list):
        return []
    return [float(v) for v in value if isinstance(v, int | float)]


def _result_text(result: dict[str, Any]) -> str:
    if result.get("ok"):
        return "done"
    parts = [str(result.get(k)) for k in ("http_status", "exit_code", "error") if result.get(k)]
    return "failed: " + ", ".join(parts or ["unknown error"])
