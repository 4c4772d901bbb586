"""The monitor's I/O: health checks, the generation probe, disk, memory, GPU, PID 1's credential.

Every function returns plain data and never raises for an unhealthy target: a failure is a value.
HTTP to the local services bypasses any ``http_proxy`` of the environment.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vastllm.proxy.resp import RedisError, RespClient

_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_MAX_BODY = 4 * 1024 * 1024


@dataclass(slots=True)
class HttpResult:
    status: int | None  # None: no HTTP answer (refused, timeout, reset)
    body: bytes = b""
    error: str | None = None
    ms: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason
        return (
            f"{type(reason).__name__}: {reason}"
            if isinstance(reason, BaseException)
            else str(reason)
        )
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


def http_call(
    method: str,
    url: str,
    *,
    timeout: float,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    opener: urllib.request.OpenerDirector = _LOCAL,
) -> HttpResult:
    """One HTTP exchange; the body (JSON when ``body`` is given) is read up to 4 MiB."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    started = time.perf_counter()
    try:
        with opener.open(request, timeout=timeout) as response:
            payload = response.read(_MAX_BODY)
            status = int(response.status)
            got = dict(response.headers.items())
    except urllib.error.HTTPError as exc:
        try:
            payload = exc.read(_MAX_BODY)
        except OSError:
            payload = b""
        return HttpResult(exc.code, payload, None, _ms(started), dict(exc.headers.items()))
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return HttpResult(None, b"", _error_text(exc), _ms(started))
    return HttpResult(status, payload, None, _ms(started), got)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


# -- services --------------------------------------------------------------------------------------
def check_ollama(url: str, timeout: float) -> dict[str, Any]:
    result = http_call("GET", f"{url}/api/version", timeout=timeout)
    body = result.json()
    if result.status == 200 and isinstance(body, dict) and "version" in body:
        return {"ok": True, "status": "ok", "ms": result.ms, "version": str(body["version"])}
    return {"ok": False, "status": "down", "ms": result.ms, "error": _http_error(result)}


def _http_error(result: HttpResult) -> str:
    if result.status is None:
        return result.error or "no answer"
    return f"HTTP {result.status}"


def check_redis(url: str, timeout: float) -> dict[str, Any]:
    if not url:
        return {"ok": None, "status": "disabled"}

    async def ping() -> bool:
        client = RespClient(url, connect_timeout=timeout, timeout=timeout, max_idle=1)
        try:
            return await client.ping()
        finally:
            await client.aclose()

    started = time.perf_counter()
    try:
        ok = asyncio.run(ping())
        error = None if ok else "PING did not answer PONG"
    except (RedisError, ValueError) as exc:
        ok, error = False, str(exc)
    check: dict[str, Any] = {"ok": ok, "status": "ok" if ok else "down", "ms": _ms(started)}
    if error:
        check["error"] = error
    return check


def check_proxy(url: str, timeout: float, api_key: str | None) -> dict[str, Any]:
    """``/health/liveness`` (the proxy's own health), ``/health`` (its view) and the request
    counter text of ``/metrics`` (returned under ``_metrics``, never recorded)."""
    if not url:
        return {"ok": None, "status": "disabled"}
    live = http_call("GET", f"{url}/health/liveness", timeout=timeout)
    live_body = live.json()
    ok = live.status == 200 and isinstance(live_body, dict) and live_body.get("status") == "ok"
    check: dict[str, Any] = {"ok": ok, "status": "ok" if ok else "down", "ms": live.ms}
    if not ok:
        check["error"] = _http_error(live)
        return check
    health = http_call("GET", f"{url}/health", timeout=timeout)
    report = health.json()
    if isinstance(report, dict):
        model = _dict(report.get("model"))
        redis = _dict(report.get("redis"))
        check["health"] = {
            "status": report.get("status"),
            "model": model.get("name"),
            "model_present": model.get("present"),
            "model_loaded": model.get("loaded"),
            "redis_reachable": redis.get("reachable"),
            "uptime_seconds": report.get("uptime_seconds"),
        }
        cache = report.get("cache")
        if isinstance(cache, dict):
            check["health"]["cache_hit_ratio"] = cache.get("hit_ratio")
    else:
        check["health"] = {"status": None, "error": _http_error(health)}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    metrics = http_call("GET", f"{url}/metrics", timeout=timeout, headers=headers)
    check["_metrics"] = metrics
    return check


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def generation_probe(url: str, model: str, prompt: str, timeout: float) -> tuple[HttpResult, Any]:
    """A real one-token generation (``/api/generate``, ``num_predict`` 1, not streamed)."""
    result = http_call(
        "POST",
        f"{url}/api/generate",
        timeout=timeout,
        body={"model": model, "prompt": prompt, "stream": False, "options": {"num_predict": 1}},
    )
    return result, result.json()


# -- host figures ----------------------------------------------------------------------------------
def disk(path: str) -> dict[str, Any] | None:
    """Size, free space and use (like df: used / (used + available)) of the filesystem of path."""
    probe = path
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)  # a state dir not created yet: its filesystem
    try:
        st = os.statvfs(probe)
    except OSError:
        return None
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    pct = used / (used + free) * 100 if used + free else 0.0
    return {
        "path": path,
        "total_bytes": total,
        "free_bytes": free,
        "used_pct": round(pct, 1),
    }


def parse_meminfo(text: str) -> dict[str, Any] | None:
    """``MemTotal`` and ``MemAvailable`` (kB in the file) as bytes and the used percentage."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    total = values.get("MemTotal")
    available = values.get("MemAvailable", values.get("MemFree"))
    if not total or available is None:
        return None
    return {
        "total_bytes": total,
        "available_bytes": available,
        "used_pct": round((total - available) / total * 100, 1),
    }


def memory(meminfo: str = "/proc/meminfo", cgroup: str = "/sys/fs/cgroup") -> dict[str, Any] | None:
    try:
        with open(meminfo, encoding="ascii", errors="replace") as handle:
            result = parse_meminfo(handle.read())
    except OSError:
        result = None
    limit = _read_int(os.path.join(cgroup, "memory.max"))
    usage = _read_int(os.path.join(cgroup, "memory.current"))
    if result is not None and limit is not None and usage is not None:
        result["cgroup_limit_bytes"] = limit
        result["cgroup_usage_bytes"] = usage
    return result


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """Lines of ``--query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv,noheader,
    nounits``; a figure the driver does not report (``[N/A]``) is None."""

    def number(value: str) -> float | None:
        try:
            return float(value)
        except ValueError:
            return None

    gpus = []
    for index, line in enumerate(text.strip().splitlines()):
        parts = [part.strip() for part in line.rsplit(",", 3)]
        if len(parts) != 4 or not parts[0]:
            continue
        gpus.append(
            {
                "index": index,
                "name": parts[0],
                "memory_used_mib": number(parts[1]),
                "memory_total_mib": number(parts[2]),
                "utilization_pct": number(parts[3]),
            }
        )
    return gpus


def gpu(program: str, timeout: float = 10.0) -> dict[str, Any] | None:
    """GPU figures, or None when there is no nvidia-smi (no GPU figures at all)."""
    path = shutil.which(program) if program else None
    if not path:
        return None
    try:
        done = subprocess.run(
            [
                path,
                "--query-gpu=name,memory.used,memory.total,utilization.gpu",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "error": _error_text(exc), "gpus": []}
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-300:]
        return {"ok": False, "error": f"nvidia-smi exit {done.returncode}: {tail}", "gpus": []}
    return {"ok": True, "gpus": parse_nvidia_smi(done.stdout.decode(errors="replace"))}


# -- PID 1's environment ---------------------------------------------------------------------------
def parse_environ(data: bytes) -> dict[str, str]:
    """``/proc/<pid>/environ``: NUL-separated ``NAME=value`` entries."""
    env: dict[str, str] = {}
    for item in data.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name:
            env[name.decode(errors="replace")] = value.decode(errors="replace")
    return env


@dataclass(frozen=True, slots=True)
class Credential:
    instance_id: str
    api_key: str = field(repr=False)


def read_credential(environ_path: str) -> tuple[Credential | None, str]:
    """The instance-scoped credential vast.ai puts into the container (PID 1's environment), and
    a reason when it is unavailable. Never the user's own key: only these two variables."""
    try:
        with open(environ_path, "rb") as handle:
            env = parse_environ(handle.read())
    except OSError as exc:
        return None, f"cannot read {environ_path}: {exc.strerror}"
    instance_id = env.get("CONTAINER_ID", "").strip()
    key = env.get("CONTAINER_API_KEY", "").strip()
    if not instance_id or not key:
        return None, f"CONTAINER_ID/CONTAINER_API_KEY are not set in {environ_path}"
    if not instance_id.isdigit():
        return None, f"CONTAINER_ID in {environ_path} is not a number"
    return Credential(instance_id, key), ""


def container_start_token(environ_path: str) -> str:
    """An id of the container's life: PID 1's start time (``stat`` next to ``environ``); a new
    container (after a stop/start of the instance) has a new one. "" when unreadable."""
    stat_path = os.path.join(os.path.dirname(environ_path), "stat")
    try:
        with open(stat_path, encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return ""
    fields = text.rpartition(")")[2].split()
    # after "pid (comm)" the fields start at 3 (state); starttime is field 22
    return fields[19] if len(fields) > 19 else ""
