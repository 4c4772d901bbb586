"""The operational routes: ``/`` (service and version), ``/health`` and its liveness and
readiness probes, and ``/metrics`` (Prometheus text).

``/health`` and ``/health/readiness`` need no key, so they must not let a client multiply load
on Ollama and Redis: the probes (four Ollama calls and a Redis ping) are shared by every report
for ``PROBE_TTL`` seconds, concurrent reports wait for the same probe round, and the model's
window is learned once (``window.ContextWindow.report``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from vastllm import __version__
from vastllm.proxy.asgi import Call, Route, send_body
from vastllm.proxy.config import redact_url
from vastllm.proxy.context import Context
from vastllm.proxy.names import key_or_none

_PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"
PROBE_TTL = 2.0  # seconds a round of health probes (Ollama, Redis) is reused


class _Probes:
    """The last round of probes (backend results, Redis reachability) and when it ran; one
    round at a time, shared by the reports that arrive while it runs."""

    __slots__ = ("at", "results", "task")

    def __init__(self) -> None:
        self.at = float("-inf")
        self.results: tuple[Any, ...] = ()
        self.task: asyncio.Task[tuple[Any, ...]] | None = None


async def _probe(context: Context) -> tuple[Any, ...]:
    backend = context.backend
    results: tuple[Any, ...] = await asyncio.gather(
        backend.version(),
        backend.model_names(),
        backend.loaded_model_names(),
        backend.loaded_context_lengths(),
        return_exceptions=True,
    )
    cache = context.cache
    reachable = await cache.ping() if cache is not None else None
    return (*results, reachable)


async def _probe_results(context: Context) -> tuple[Any, ...]:
    probes = context.health_probes
    if not isinstance(probes, _Probes):
        probes = context.health_probes = _Probes()
    now = time.monotonic()
    if probes.results and now - probes.at < PROBE_TTL:
        return probes.results
    if probes.task is None or probes.task.done():
        probes.task = asyncio.get_running_loop().create_task(_probe(context))
    task = probes.task
    results = await asyncio.shield(task)
    if probes.task is task:
        probes.results, probes.at, probes.task = results, time.monotonic(), None
    return results


def _keys(names: Any) -> set[str]:
    """The keys of a backend's model list (an exception, when the call failed: none)."""
    if not isinstance(names, list):
        return set()
    return {key_or_none(name) or name for name in names}


async def health_report(context: Context) -> dict[str, Any]:
    """``status``: ``down`` when the backend does not answer, ``degraded`` when it lacks the
    model or the cache is on but Redis does not answer, else ``ok``."""
    backend, settings = context.backend, context.settings
    version, present, loaded, loaded_contexts, redis_up = await _probe_results(context)
    reachable = not isinstance(version, BaseException)
    ollama: dict[str, Any] = {
        "reachable": reachable,
        "url": redact_url(settings.ollama_url),
        "version": version if reachable else None,
    }
    if not reachable:
        ollama["error"] = f"{type(version).__name__}: cannot reach Ollama"
    wanted = key_or_none(settings.model) or settings.model
    model = {
        "name": settings.model,
        "present": wanted in _keys(present),
        "loaded": wanted in _keys(loaded),
    }
    window = await context.window.report(backend, settings.model, loaded_contexts)
    cache = context.cache
    redis: dict[str, Any] = {"enabled": cache is not None, "reachable": None}
    if cache is not None:
        redis["reachable"] = bool(redis_up)
        if not redis["reachable"]:
            redis["error"] = cache.last_error
    if not reachable:
        status = "down"
    elif not model["present"] or redis["reachable"] is False:
        status = "degraded"
    else:
        status = "ok"
    metrics = context.metrics
    return {
        "status": status,
        "version": __version__,
        "uptime_seconds": round(time.time() - context.started_at, 3),
        "ollama": ollama,
        "model": model,
        "redis": redis,
        "context_window": window,
        "cache": {
            "hits": metrics.cache["hit"],
            "misses": metrics.cache["miss"],
            "bypasses": metrics.cache["bypass"],
            "hit_ratio": round(metrics.hit_ratio, 6),
        },
    }


def health_routes(context: Context) -> list[Route]:
    async def root(call: Call) -> None:
        body = orjson.dumps({"service": "vastllm-proxy", "version": __version__})
        await send_body(call, 200, body, head=call.scope["method"] == "HEAD")

    async def liveness(call: Call) -> None:
        await send_body(call, 200, b'{"status":"ok"}')

    async def health(call: Call) -> None:
        report = await health_report(context)
        status = 503 if report["status"] == "down" else 200
        await send_body(call, status, orjson.dumps(report))

    async def readiness(call: Call) -> None:
        report = await health_report(context)
        ready = report["ollama"]["reachable"] and report["model"]["present"]
        body = orjson.dumps(
            {"status": "ready" if ready else "not_ready", "health": report["status"]}
        )
        await send_body(call, 200 if ready else 503, body)

    async def metrics(call: Call) -> None:
        context.auth.check(call, open_route=context.settings.open_metrics)
        await send_body(call, 200, context.metrics.render(), _PROMETHEUS)

    return [
        Route("GET", "/", "root", root),
        Route("HEAD", "/", "root", root),
        Route("GET", "/health", "health", health),
        Route("GET", "/health/liveness", "liveness", liveness),
        Route("GET", "/health/readiness", "readiness", readiness),
        Route("GET", "/metrics", "metrics", metrics),
    ]
