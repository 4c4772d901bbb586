"""What a user of a converged vastllm host depends on, checked from inside the host.

Expected values come from the roles' defaults, overridden by the scenario's inventory
(molecule.yml): the same settings the roles ran with, not literals of their own."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[3] / "roles"
KEY_FILE = "/etc/vastllm/proxy-api-key"
PROGRAMS = ["ollama", "vastllm-redis", "vastllm-proxy", "vastllm-monitor"]


@pytest.fixture(scope="module")
def settings(host) -> dict[str, Any]:
    """ollama_* and proxy_* settings of the converged host: role defaults, then inventory vars."""
    defaults: dict[str, Any] = {}
    for role in ("ollama", "proxy"):
        defaults.update(yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()))
    inventory = host.ansible.get_variables()
    return {name: inventory.get(name, value) for name, value in defaults.items()}


@pytest.fixture(scope="module")
def ollama_url(settings) -> str:
    return f"http://{settings['ollama_host']}"


@pytest.fixture(scope="module")
def proxy_url(settings) -> str:
    return f"http://127.0.0.1:{settings['proxy_port']}"


def _json(host, cmd: str) -> dict:
    out = host.check_output(cmd)
    return json.loads(out)


def _log(host, name: str) -> str:
    return host.run(f"tail -n 40 /var/log/vastllm/{name}.log").stdout


def test_ollama_binary_is_the_pinned_release(host, settings, ollama_url):
    binary = host.file("/usr/local/bin/ollama")
    assert binary.is_file
    assert binary.mode == 0o755
    assert host.file("/usr/local/lib/ollama").is_directory
    pinned = settings["ollama_version"]
    assert f"version is {pinned}" in host.check_output("/usr/local/bin/ollama --version")
    assert _json(host, f"curl -sf {ollama_url}/api/version")["version"] == pinned


def test_no_systemd_on_the_host(host):
    assert host.file("/proc/1/comm").content_string.strip() != "systemd"


@pytest.mark.parametrize("program", PROGRAMS, ids=PROGRAMS)
def test_supervisord_runs_the_program(host, program):
    status = host.run(f"supervisorctl status {program}")
    assert "RUNNING" in status.stdout, _log(host, program)
    assert host.file(f"/etc/supervisor/conf.d/{program}.conf").mode == 0o600


@pytest.mark.parametrize("backend", ["ollama", "redis"], ids=["ollama", "redis"])
def test_backend_listens_on_loopback_only(host, settings, backend):
    port = (
        int(settings["ollama_host"].rsplit(":", 1)[1])
        if backend == "ollama"
        else settings["proxy_redis_port"]
    )
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    assert not host.socket(f"tcp://:::{port}").is_listening


def test_models_live_on_the_workspace_disk(host, settings):
    env = host.file("/etc/supervisor/conf.d/ollama.conf").content_string
    assert 'OLLAMA_MODELS="/workspace/ollama/models"' in env
    assert f'OLLAMA_HOST="{settings["ollama_host"]}"' in env
    assert host.file("/workspace/ollama/models/manifests").is_directory


def test_the_served_model_is_listed_and_answers(host, ollama_url, proxy_url):
    health = _json(host, f"curl -s {proxy_url}/health")
    model = health["model"]["name"] if isinstance(health.get("model"), dict) else health["model"]
    tags = _json(host, f"curl -sf {ollama_url}/api/tags")
    assert model in [m["name"] for m in tags["models"]]
    body = json.dumps({"model": model, "prompt": "Say hello", "stream": False})
    answer = _json(host, f"curl -sf {ollama_url}/api/generate -d '{body}'")
    assert answer["done"] is True
    assert answer["response"].strip()


def test_proxy_key_file_is_private(host):
    key = host.file(KEY_FILE)
    assert key.is_file
    assert key.mode == 0o600
    assert key.user == "root"
    assert len(key.content_string.strip()) >= 32


def test_proxy_requires_the_key_and_answers_with_it(host, proxy_url):
    body = json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 32,
            "messages": [{"role": "user", "content": "hi"}],
        }
    )
    denied = host.run(
        f"curl -s -o /dev/null -w '%{{http_code}}' {proxy_url}/v1/messages "
        f"-H 'content-type: application/json' -d '{body}'"
    )
    assert denied.stdout == "401"
    answer = _json(
        host,
        f'curl -sf {proxy_url}/v1/messages -H "x-api-key: $(cat {KEY_FILE})" '
        f"-H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' -d '{body}'",
    )
    assert answer["type"] == "message"
    assert answer["content"][0]["text"].strip()


def test_proxy_health_is_ok(host, proxy_url):
    health = _json(host, f"curl -s {proxy_url}/health")
    assert health["status"] == "ok", health


def test_a_crashed_ollama_is_restarted(host, ollama_url):
    before = host.check_output("supervisorctl pid ollama").strip()
    host.run(f"kill -9 {before}")
    deadline = time.monotonic() + 30
    after = before
    while time.monotonic() < deadline:
        after = host.run("supervisorctl pid ollama").stdout.strip()
        if (
            after.isdigit()
            and after not in ("0", before)
            and host.run(f"curl -sf {ollama_url}/api/version").rc == 0
        ):
            break
        time.sleep(1)
    assert after != before, _log(host, "ollama")
    assert host.run(f"curl -sf {ollama_url}/api/version").rc == 0


def test_monitor_config_and_records(host):
    """The monitor config (0600) restarts each part through supervisorctl; the monitor records."""
    config = host.file("/etc/vastllm/monitor.json")
    assert config.mode == 0o600
    settings = json.loads(config.content_string)
    for component, program in (("ollama", "ollama"), ("redis", "vastllm-redis"),
                               ("proxy", "vastllm-proxy")):  # fmt: skip
        command = settings[f"restart_{component}"]
        assert command[0].endswith("supervisorctl")
        assert command[-2:] == ["restart", program]
    assert settings["idle_stop_minutes"] == 0
    assert settings["proxy_api_key_file"] == KEY_FILE
    key = host.file(KEY_FILE).content_string.strip()
    assert key
    assert key not in config.content_string  # the file path only, never the key
    report = _json(host, "/opt/vastllm/venv/bin/vastllm-monitor report --json")
    assert report["last_record"] is not None
