"""Fixtures of the proxy integration tests: a real redis-server and the proxy as a process.

Everything listens on 127.0.0.1 on free ports; processes are ours and are stopped by id.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import API_KEY, free_port

REDIS_SERVER = "/usr/bin/redis-server"


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


class RedisServer:
    """A real redis-server on a free loopback port; kill() and restart() keep the port."""

    def __init__(self, workdir: Path, extra_args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.extra_args = extra_args or []
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
            [
                REDIS_SERVER,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                "redis.log",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(self._ping, 10, "redis-server")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def keys(self) -> list[str]:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            return sorted(k.decode() for k in client.keys("vastllm:*"))
        finally:
            client.close()

    def flush(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()


@pytest.fixture
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip(f"{REDIS_SERVER} is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


class ProxyProcess:
    """`python -m vastllm.proxy` on a free loopback port, with its log in a file."""

    def __init__(self, env: dict[str, str], workdir: Path, args: list[str]) -> None:
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
        )

    def wait_ready(self) -> ProxyProcess:
        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited early:\n{self.log()}")
            try:
                return httpx.get(self.url + "/health/liveness", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(up, 20, "the proxy")
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


@pytest.fixture
def start_proxy(tmp_path) -> Iterator:
    """Factory: start_proxy(ollama_url, redis_url="", **VASTLLM_settings) -> ProxyProcess."""
    started: list[ProxyProcess] = []

    def start(ollama_url: str, redis_url: str = "", *, args: list[str] | None = None, **settings):
        env = {"VASTLLM_OLLAMA_URL": ollama_url, "VASTLLM_REDIS_URL": redis_url}
        env.update({"VASTLLM_" + k.upper(): str(v) for k, v in settings.items()})
        proxy = ProxyProcess(env, tmp_path, args or [])
        started.append(proxy)
        return proxy.wait_ready()

    yield start
    for proxy in started:
        proxy.stop()


def claude_binary() -> str | None:
    return shutil.which("claude")


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory) -> Iterator[RedisServer]:
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip(f"{REDIS_SERVER} is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis-shared"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def shared_proxy(ollama_emulator_session, shared_redis, tmp_path_factory) -> Iterator[ProxyProcess]:
    """One proxy (key required, haiku names mapped to a small model) for the read-only tests.

    Tests that share it use unique prompts or `cache-control: no-cache` when a miss matters,
    and clear any emulator fault they set.
    """
    env = {
        "VASTLLM_OLLAMA_URL": ollama_emulator_session.url,
        "VASTLLM_REDIS_URL": shared_redis.url,
        "VASTLLM_API_KEY": API_KEY,
        "VASTLLM_MODEL": "qwen3-coder:30b",
        "VASTLLM_MODEL_MAP": '{"claude-*haiku*": "qwen2.5-coder:1.5b", "think-*": "qwen3:0.6b",'
        ' "ghost-*": "missing-model:1b"}',
        "VASTLLM_MAX_REQUEST_BYTES": "200000",
    }
    proxy = ProxyProcess(env, tmp_path_factory.mktemp("proxy-shared"), [])
    try:
        yield proxy.wait_ready()
    finally:
        proxy.stop()


@pytest.fixture
def client(shared_proxy):
    import anthropic

    with anthropic.Anthropic(base_url=shared_proxy.url, api_key=API_KEY, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def http(shared_proxy):
    with httpx.Client(
        base_url=shared_proxy.url, headers={"x-api-key": API_KEY}, timeout=30
    ) as session:
        yield session
