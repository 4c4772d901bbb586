"""Helpers and fixtures for the vast.ai integration tests: the emulator and an SSH-banner listener,
both on 127.0.0.1, and a runner for ansible-inventory / ansible-playbook from the repo root."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vastllm_lab.testing import ansible_env as shared_ansible_env
from vastllm_lab.vastai.fixtures import generate_instances
from vastllm_lab.vastai.server import LabServer
from vastllm_lab.vastai.state import LabState

REPO = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"


class BannerListener:
    """Answers every TCP connection with an SSH banner, like sshd does first."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                conn.sendall(b"SSH-2.0-vastllm-lab\r\n")

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def banner() -> Iterator[BannerListener]:
    listener = BannerListener()
    try:
        yield listener
    finally:
        listener.close()


def _start(state: LabState) -> LabServer:
    return LabServer(state).start()


@pytest.fixture
def lab_factory() -> Iterator[Callable[..., LabServer]]:
    servers: list[LabServer] = []

    def make(**kw: object) -> LabServer:
        kw.setdefault("api_keys", ["lab-key"])
        server = _start(LabState(**kw))  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def lab(lab_factory: Callable[..., LabServer]) -> LabServer:
    return lab_factory(instances=generate_instances(60), loading_delay=0.3)


def ansible_env(lab: LabServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    return shared_ansible_env(
        REPO, home=tmp_path, **{"VAST_URL": lab.url, "VAST_API_KEY": "lab-key", **extra}
    )


def run_cmd(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
