"""Fixtures of the proxy integration tests: a real redis-server and the proxy as a process.

Everything listens on 127.0.0.1 on free ports; processes are ours and are stopped by id.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from proxy_helpers import API_KEY

from vastllm_lab.testing_services import ProxyProcess, RedisServer, running_redis


@pytest.fixture
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def start_proxy(tmp_path) -> Iterator:
    """Factory: start_proxy(ollama_url, redis_url="", **VASTLLM_settings) -> ProxyProcess."""
    started: list[ProxyProcess] = []

    def start(ollama_url: str, redis_url: str = "", *, args: list[str] | None = None, **settings):
        env = {"VASTLLM_OLLAMA_URL": ollama_url, "VASTLLM_REDIS_URL": redis_url}
        env.update({"VASTLLM_" + k.upper(): str(v) for k, v in settings.items()})
        proxy = ProxyProcess(tmp_path, env, args or [])
        started.append(proxy)
        return proxy.wait_ready()

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis-shared")) as server:
        yield server


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
    proxy = ProxyProcess(tmp_path_factory.mktemp("proxy-shared"), env)
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
