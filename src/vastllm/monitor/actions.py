"""What the monitor does to the host: restart a component, stop the instance through vast.ai."""

from __future__ import annotations

import ipaddress
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from vastllm.monitor.probes import _LOCAL, Credential, http_call

_TAIL = 400


def run_restart(command: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run the configured restart command (no shell); its exit code and the tail of its output."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            list(command),
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return {
            "ok": False,
            "exit_code": None,
            "error": f"timed out after {timeout:g}s",
            "ms": _ms(started),
        }
    except OSError as exc:
        return {"ok": False, "exit_code": None, "error": f"cannot run: {exc.strerror}"}
    output = (done.stdout + done.stderr).decode(errors="replace").strip()
    result: dict[str, Any] = {
        "ok": done.returncode == 0,
        "exit_code": done.returncode,
        "output": output[-_TAIL:],
        "ms": _ms(started),
    }
    return result


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def stop_instance(api_url: str, credential: Credential, timeout: float = 30.0) -> dict[str, Any]:
    """``PUT {api_url}/api/v0/instances/{id}/`` with ``{"state": "stopped"}``, authorized by the
    instance-scoped key. The result holds the HTTP status and the API's message, never the key."""
    url = f"{api_url.rstrip('/')}/api/v0/instances/{credential.instance_id}/"
    opener = _LOCAL if _is_loopback(api_url) else urllib.request.build_opener()
    result = http_call(
        "PUT",
        url,
        timeout=timeout,
        body={"state": "stopped"},
        headers={"Authorization": f"Bearer {credential.api_key}", "Accept": "application/json"},
        opener=opener,
    )
    body = result.json()
    message = ""
    if isinstance(body, dict):
        message = str(body.get("msg") or body.get("error") or "")
    ok = result.status == 200 and not (isinstance(body, dict) and body.get("success") is False)
    out: dict[str, Any] = {"ok": ok, "http_status": result.status, "ms": result.ms}
    if message:
        out["message"] = message.replace(credential.api_key, "***")[:300]
    if result.error:
        out["error"] = result.error.replace(credential.api_key, "***")
    return out
