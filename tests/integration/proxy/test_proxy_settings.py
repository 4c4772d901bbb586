"""Settings that change behaviour visible from outside: open metrics, JSON logs, key file."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx
from proxy_helpers import BASIC, assert_anthropic_error


def test_open_metrics_and_json_logs(ollama_emulator, start_proxy, tmp_path):
    backend = ollama_emulator(preload=["qwen3-coder:30b"])
    key_file = tmp_path / "key"
    key_file.write_text("file-key-0123456789\n")
    key_file.chmod(0o600)
    proxy = start_proxy(
        backend.url, "", open_metrics="true", api_key_file=str(key_file), log_format="json"
    )
    assert httpx.get(proxy.url + "/metrics").status_code == 200
    assert httpx.get(proxy.url + "/v1/models").status_code == 200
    assert_anthropic_error(httpx.post(proxy.url + "/v1/messages", json=BASIC), 401,
                           "authentication_error")  # fmt: skip
    ok = httpx.post(
        proxy.url + "/v1/messages", json=BASIC, headers={"x-api-key": "file-key-0123456789"}
    )
    assert ok.status_code == 200

    def access_lines() -> list[dict]:
        lines = [json.loads(line) for line in proxy.log().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("logger") == "vastllm.proxy.access"]

    # The access line is written after the answer went out: wait for it (bounded) before reading.
    deadline = time.monotonic() + 5

    def answered(lines: list[dict]) -> bool:
        return any(line["status"] == 200 and line.get("cache") == "bypass" for line in lines)

    while not answered(access_lines()) and time.monotonic() < deadline:
        time.sleep(0.05)
    access = access_lines()
    assert answered(access), proxy.log()
    assert all("request_id" in line and "duration_ms" in line for line in access)
    assert "file-key-0123456789" not in proxy.log()


def test_port_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "vastllm.proxy", "--port", str(port), "--redis-url", ""],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode != 0
    assert "address already in use" in result.stderr
    assert "Traceback" not in result.stderr
