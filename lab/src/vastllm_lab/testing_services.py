"""Processes the integration tests start: a real redis-server and the proxy, each on a free
127.0.0.1 port, stopped by their id (and by the kernel when the test process dies).

    from vastllm_lab.testing_services import ProxyProcess, running_redis

    with running_redis(tmp_path) as server:  # skips the test without redis-server
        proxy = ProxyProcess(tmp_path, {"VASTLLM_REDIS_URL": server.url}).wait_ready()
        ...
        proxy.stop()
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .testing import free_port

__all__ = [
    "REDIS_SERVER",
    "ProxyProcess",
    "RedisServer",
    "die_with_parent",
    "http_ok",
    "running_redis",
    "wait_for",
]

REDIS_SERVER = "/usr/bin/redis-server"


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the test process dies (even by SIGKILL)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` until it is true; RuntimeError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def http_ok(url: str, timeout: float = 0.5) -> bool:
    """Whether a GET of `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status) == 200
    except (OSError, http.client.HTTPException):
        return False


class RedisServer:
    """A real redis-server on a free loopback port; kill() and restart() keep the port."""

    def __init__(self, workdir: Path, extra_args: Sequence[str] | None = None) -> None:
        self.workdir = workdir
        self.extra_args = list(extra_args or [])
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--logfile", "redis.log",
             *self.extra_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        wait_for(self._ping, 10, "redis-server")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def keys(self) -> list[str]:
        """The proxy's keys (`vastllm:*`), sorted (needs the `redis` client package)."""
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            return sorted(
                k.decode() if isinstance(k, bytes) else str(k) for k in client.keys("vastllm:*")
            )
        finally:
            client.close()

    def flush(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()


@contextmanager
def running_redis(workdir: Path) -> Iterator[RedisServer]:
    """A started RedisServer in `workdir`, killed afterwards; skips the test (pytest.skip)
    when redis-server is not installed. The body of the tests' `redis_server` fixtures."""
    if not os.access(REDIS_SERVER, os.X_OK):
        import pytest

        pytest.skip(f"{REDIS_SERVER} is not installed (apt-get install redis-server)")
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.kill()


class ProxyProcess:
    """`python -m vastllm.proxy` on a free loopback port, with its log in a file.

    The caller's VASTLLM_* settings are dropped; `env` comes last. Call wait_ready().
    """

    def __init__(self, workdir: Path, env: dict[str, str], args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"proxy-{self.port}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("VASTLLM_")}
        full_env.update({"VASTLLM_HOST": "127.0.0.1", "VASTLLM_PORT": str(self.port)})
        full_env.update(env)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vastllm.proxy", *args],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )

    def wait_ready(self, timeout: float = 20) -> ProxyProcess:
        """Until /health/liveness answers 200; RuntimeError with the log if the proxy exits."""

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited early:\n{self.log()}")
            return http_ok(self.url + "/health/liveness")

        wait_for(up, timeout, "the proxy")
        return self

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
