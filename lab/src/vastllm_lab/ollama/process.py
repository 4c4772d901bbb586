"""Run the Ollama lab double as a subprocess (for tests, benchmarks and the local lab).

    with LabOllamaProcess(models_dir="/tmp/m", preload=["qwen3:0.6b"]) as emu:
        requests.post(f"{emu.url}/api/chat", json=...)
        emu.set_faults({"busy": True})

It listens on a free loopback port (chosen by the OS, read back from the log), logs to a file
(never a pipe that could fill up) and is always stopped by `stop()`/`kill()`/the context manager.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

_LISTEN_RE = re.compile(r"Listening on (?:\[[^\]]+\]|[^ :]+):([0-9]+) ")
_ALIVE: weakref.WeakSet[LabOllamaProcess] = weakref.WeakSet()


class LabOllamaError(RuntimeError):
    """The lab double did not start (the message includes its log) or a control call failed."""


def _cleanup_all() -> None:
    for proc in list(_ALIVE):
        proc.kill()


atexit.register(_cleanup_all)


class LabOllamaProcess:
    """One lab-double server process on 127.0.0.1."""

    def __init__(
        self,
        models_dir: str | None = None,
        preload: Iterable[str] = (),
        faults: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        port: int = 0,
        startup_timeout: float = 15.0,
        command: list[str] | None = None,
        log_dir: str | None = None,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if models_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lab-ollama-")
            models_dir = os.path.join(self._tmp.name, "models")
        self.models_dir = models_dir
        self.preload = list(preload)
        self.faults = dict(faults or {})
        self.extra_env = dict(env or {})
        self.port = port
        self.startup_timeout = startup_timeout
        self.command = command or [sys.executable, "-m", "vastllm_lab", "ollama", "serve"]
        if log_dir is None:
            log_dir = self._tmp.name if self._tmp else os.path.dirname(os.path.abspath(models_dir))
        os.makedirs(log_dir, exist_ok=True)
        self.log_path = os.path.join(log_dir, f"lab-ollama-{os.getpid()}-{id(self)}.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        """The OLLAMA_HOST value a client uses for this server."""
        return f"127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        for key in list(env):
            if key.startswith(("OLLAMA_", "VASTLLM_LAB_")):
                del env[key]
        env.update(
            {
                "OLLAMA_HOST": f"127.0.0.1:{self.port}",
                "OLLAMA_MODELS": self.models_dir,
                "PYTHONUNBUFFERED": "1",
                # never outlive this process, even when it is killed with SIGKILL
                "VASTLLM_LAB_EXIT_WITH_PARENT": "1",
            }
        )
        if self.preload:
            env["VASTLLM_LAB_PRELOAD"] = ",".join(self.preload)
        if self.faults:
            env["VASTLLM_LAB_FAULTS"] = json.dumps(self.faults)
        env.update(self.extra_env)
        return env

    def start(self) -> LabOllamaProcess:
        if self.running:
            return self
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            self.proc = subprocess.Popen(
                self.command,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        _ALIVE.add(self)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise LabOllamaError(
                    f"the Ollama lab double exited with code {code} at start:\n{self.log()}"
                )
            if self.port == 0:
                match = _LISTEN_RE.search(self.log(since_start=True))
                if match:
                    self.port = int(match.group(1))
            if self.port:
                try:
                    self.request("GET", "/api/version", timeout=1.0)
                    return
                except (OSError, LabOllamaError):
                    pass
            time.sleep(0.02)
        self.kill()
        raise LabOllamaError(
            f"the Ollama lab double did not answer /api/version within "
            f"{self.startup_timeout:.0f}s:\n{self.log()}"
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        _ALIVE.discard(self)
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL at once (a crash); return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5.0)
        _ALIVE.discard(self)
        return self.proc.returncode

    def restart(self, env: Mapping[str, str] | None = None) -> LabOllamaProcess:
        """Stop and start again on the same port and models dir (faults come from the env)."""
        self.stop()
        if env is not None:
            self.extra_env.update(env)
        self.proc = None
        return self.start()

    def wait(self, timeout: float = 5.0) -> int:
        """Wait for the process to exit (e.g. after the `crash` fault); return its exit code."""
        if self.proc is None:
            raise LabOllamaError("the lab double was never started")
        code = self.proc.wait(timeout)
        _ALIVE.discard(self)
        return code

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LabOllamaProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self, since_start: bool = False) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                if since_start:
                    handle.seek(self._log_offset)
                return handle.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    # -- HTTP helpers ----------------------------------------------------------------------
    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 10.0
    ) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        status, data = self.request(method, path, body)
        if status != 200:
            raise LabOllamaError(f"{method} {path} -> {status}: {data.decode('utf-8', 'replace')}")
        return json.loads(data) if data else None

    def set_faults(self, faults: Mapping[str, Any]) -> dict[str, Any]:
        """Merge faults (a `None` value removes one); return the faults now active."""
        result: dict[str, Any] = self._control("POST", "/lab/faults", dict(faults))
        return result

    def clear_faults(self) -> None:
        self._control("DELETE", "/lab/faults")

    def get_faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._control("GET", "/lab/faults")
        return result

    def stats(self) -> dict[str, int]:
        """Requests served per path (e.g. `{"/api/chat": 3}`), /lab/ paths not counted."""
        result: dict[str, int] = self._control("GET", "/lab/stats")["requests"]
        return result

    def slots(self) -> dict[str, list[dict[str, int]]]:
        """Per loaded model, each prompt-cache slot's counters (`requests`, `hits`,
        `reused_tokens`, `evaluated_tokens`, `cached_tokens`, and `work_ns`: the double's own
        work on the requests before it starts charging evaluation time)."""
        result: dict[str, list[dict[str, int]]] = self._control("GET", "/lab/stats")["slots"]
        return result

    def reset_stats(self) -> None:
        self._control("DELETE", "/lab/stats")

    def crash(self) -> int:
        """Set the `crash` fault: the process exits at once with code 1; return the code."""
        with contextlib.suppress(OSError):
            self.request("POST", "/lab/faults", {"crash": True}, timeout=5.0)
        return self.wait()
