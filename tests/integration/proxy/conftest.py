"""Fixtures of the proxy integration tests: a real redis-server and the proxy as a process.

Everything listens on 127.0.0.1 on free ports; processes are ours and are stopped by id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from proxy_helpers import (
    API_KEY,
    REDIS_SERVER,
    RedisServer,
    die_with_parent,
    free_port,
    wait_for,
)


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
            preexec_fn=die_with_parent,
        )

    def wait_ready(self) -> ProxyProcess:
        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited early:\n{self.log()}")
            try:
                return httpx.get(self.url + "/health/liveness", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 20, "the proxy")
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
