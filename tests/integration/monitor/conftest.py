"""Fixtures of the monitor integration tests.

A real redis-server, the real proxy (``python -m vastllm.proxy``) and the Ollama lab double, all
on free 127.0.0.1 ports; a stand-in restart command that records its calls (and can "repair" the
lab double by clearing its faults); a fake ``/proc/1`` (``environ`` + ``stat``); the vast.ai lab
double in-process. Every process started here is ours and stopped by its id.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from monitor_helpers import MODEL, PROXY_KEY, MonitorProxy, RestartStandIn, fake_proc1

from vastllm_lab.testing_services import RedisServer, running_redis


@pytest.fixture
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def ollama(ollama_emulator):
    return ollama_emulator(preload=[MODEL])


@pytest.fixture
def proxy(tmp_path, ollama, redis_server) -> Iterator[MonitorProxy]:
    server = MonitorProxy(
        tmp_path,
        {
            "VASTLLM_OLLAMA_URL": ollama.url,
            "VASTLLM_REDIS_URL": redis_server.url,
            "VASTLLM_MODEL": MODEL,
            "VASTLLM_API_KEY": PROXY_KEY,
        },
    )
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture
def standin(tmp_path, ollama) -> RestartStandIn:
    directory = tmp_path / "standin"
    directory.mkdir()
    return RestartStandIn(directory, repair_url=ollama.url)


@pytest.fixture
def monitor_env(tmp_path, ollama, redis_server, proxy) -> dict[str, str]:
    """Settings of a monitor watching the three test services, fast, idle stop off."""
    key_file = tmp_path / "proxy-api-key"
    key_file.write_text(PROXY_KEY + "\n")
    return {
        "VASTLLM_MONITOR_STATE_DIR": str(tmp_path / "state"),
        "VASTLLM_MONITOR_INTERVAL": "0.2",
        "VASTLLM_MONITOR_CHECK_TIMEOUT": "2",
        "VASTLLM_MONITOR_OLLAMA_URL": ollama.url,
        "VASTLLM_MONITOR_REDIS_URL": redis_server.url,
        "VASTLLM_MONITOR_PROXY_URL": proxy.url,
        "VASTLLM_MONITOR_PROXY_API_KEY_FILE": str(key_file),
        "VASTLLM_MONITOR_PROBE_TIMEOUT": "5",
        "VASTLLM_MONITOR_IDLE_STOP_MINUTES": "0",
        "VASTLLM_MONITOR_PID1_ENVIRON": fake_proc1(tmp_path / "proc1", {"PATH": "/usr/bin"}),
        "VASTLLM_MONITOR_DISK_PATHS": str(tmp_path),
        "VASTLLM_MONITOR_NVIDIA_SMI": "",
    }
