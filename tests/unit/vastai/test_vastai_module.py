"""Pure parts of plugins/modules/vastai_instance.py: the SSH readiness probe and state checks."""

from __future__ import annotations

import socket
import threading
import time

import pytest


@pytest.fixture
def listener():
    """A loopback TCP listener that answers each connection with ``reply`` then closes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    state = {"reply": b"SSH-2.0-lab\r\n", "stop": False}

    def serve():
        sock.settimeout(0.05)
        while not state["stop"]:
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                if state["reply"]:
                    conn.sendall(state["reply"])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1], state
    state["stop"] = True
    thread.join(timeout=2)
    sock.close()


def test_ssh_banner_detected(module_file, listener):
    port, _ = listener
    assert module_file.ssh_banner_ok("127.0.0.1", port, 2.0) is True


def test_non_ssh_service_is_not_ready(module_file, listener):
    port, state = listener
    state["reply"] = b"HTTP/1.1 400 Bad Request\r\n\r\n"
    assert module_file.ssh_banner_ok("127.0.0.1", port, 2.0) is False
    state["reply"] = b""  # accepts and closes without a word
    assert module_file.ssh_banner_ok("127.0.0.1", port, 2.0) is False


def test_closed_port_is_not_ready_and_returns_fast(module_file):
    start = time.monotonic()
    assert module_file.ssh_banner_ok("127.0.0.1", 9, 2.0) is False
    assert time.monotonic() - start < 2.0


def test_silent_listener_is_bounded_by_the_timeout(module_file):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)  # the kernel accepts, nobody ever writes
    try:
        start = time.monotonic()
        assert module_file.ssh_banner_ok("127.0.0.1", sock.getsockname()[1], 0.3) is False
        assert time.monotonic() - start < 2.0
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("instance", "running", "stopped"),
    [
        ({"actual_status": "running", "intended_status": "running"}, True, False),
        ({"actual_status": "loading", "intended_status": "running"}, False, False),
        ({"actual_status": None, "intended_status": "running"}, False, False),
        ({"actual_status": "exited", "intended_status": "stopped"}, False, True),
        ({"actual_status": "running", "intended_status": "stopped"}, True, True),
    ],
)
def test_state_checks(module_file, instance, running, stopped):
    assert module_file.is_running(instance) is running
    assert module_file.is_stopped(instance) is stopped
