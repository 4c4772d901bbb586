"""What a user of a converged vastllm host depends on, checked from inside the host."""

from __future__ import annotations

import json
import time

import pytest

OLLAMA = "http://127.0.0.1:11434"
PROXY = "http://127.0.0.1:8000"
KEY_FILE = "/etc/vastllm/proxy-api-key"


def _json(host, cmd: str) -> dict:
    out = host.check_output(cmd)
    return json.loads(out)


def _dump_log_on_failure(host, name: str):
    return host.run(f"tail -n 40 /var/log/vastllm/{name}.log").stdout


def test_ollama_binary_is_the_pinned_release(host):
    binary = host.file("/usr/local/bin/ollama")
    assert binary.is_file
    assert binary.mode == 0o755
    assert host.file("/usr/local/lib/ollama").is_directory
    version = _json(host, f"curl -sf {OLLAMA}/api/version")["version"]
    assert f"version is {version}" in host.check_output("/usr/local/bin/ollama --version")


def test_no_systemd_so_supervisord_runs_the_programs(host):
    assert host.file("/proc/1/comm").content_string.strip() != "systemd"
    for program in ("ollama", "vastllm-redis", "vastllm-proxy"):
        status = host.run(f"supervisorctl status {program}")
        assert "RUNNING" in status.stdout, _dump_log_on_failure(host, program)
        assert host.file(f"/etc/supervisor/conf.d/{program}.conf").mode == 0o600


@pytest.mark.parametrize(("port", "name"), [(11434, "ollama"), (6379, "redis")])
def test_backends_listen_on_loopback_only(host, port, name):
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening, name
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening, name
    assert not host.socket(f"tcp://:::{port}").is_listening, name


def test_models_live_on_the_workspace_disk(host):
    env = host.file("/etc/supervisor/conf.d/ollama.conf").content_string
    assert 'OLLAMA_MODELS="/workspace/ollama/models"' in env
    assert 'OLLAMA_HOST="127.0.0.1:11434"' in env
    assert host.file("/workspace/ollama/models/manifests").is_directory


def test_the_served_model_is_listed_and_answers(host):
    health = _json(host, f"curl -s {PROXY}/health")
    model = health["model"]["name"] if isinstance(health.get("model"), dict) else health["model"]
    tags = _json(host, f"curl -sf {OLLAMA}/api/tags")
    assert model in [m["name"] for m in tags["models"]]
    body = json.dumps({"model": model, "prompt": "Say hello", "stream": False})
    answer = _json(host, f"curl -sf {OLLAMA}/api/generate -d '{body}'")
    assert answer["done"] is True
    assert answer["response"].strip()


def test_proxy_key_file_is_private(host):
    key = host.file(KEY_FILE)
    assert key.is_file
    assert key.mode == 0o600
    assert key.user == "root"
    assert len(key.content_string.strip()) >= 32


def test_proxy_requires_the_key_and_answers_with_it(host):
    body = json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 32,
            "messages": [{"role": "user", "content": "hi"}],
        }
    )
    denied = host.run(
        f"curl -s -o /dev/null -w '%{{http_code}}' {PROXY}/v1/messages "
        f"-H 'content-type: application/json' -d '{body}'"
    )
    assert denied.stdout == "401"
    answer = _json(
        host,
        f'curl -sf {PROXY}/v1/messages -H "x-api-key: $(cat {KEY_FILE})" '
        f"-H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' -d '{body}'",
    )
    assert answer["type"] == "message"
    assert answer["content"][0]["text"].strip()


def test_proxy_health_is_ok(host):
    health = _json(host, f"curl -s {PROXY}/health")
    assert health["status"] == "ok", health


def test_a_crashed_ollama_is_restarted(host):
    before = host.check_output("supervisorctl pid ollama").strip()
    host.run(f"kill -9 {before}")
    deadline = time.monotonic() + 30
    after = before
    while time.monotonic() < deadline:
        after = host.run("supervisorctl pid ollama").stdout.strip()
        if (
            after.isdigit()
            and after not in ("0", before)
            and host.run(f"curl -sf {OLLAMA}/api/version").rc == 0
        ):
            break
        time.sleep(1)
    assert after != before, _dump_log_on_failure(host, "ollama")
    assert host.run(f"curl -sf {OLLAMA}/api/version").rc == 0
