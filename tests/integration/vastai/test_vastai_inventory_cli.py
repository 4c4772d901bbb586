"""`ansible-inventory` with the shipped inventory/vastai.yml against the emulator."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest
from vastai_itest_helpers import BIN, REPO, ansible_env, run_cmd

from vastllm_lab.vastai.fixtures import generate_instances

INVENTORY = str(REPO / "inventory" / "vastai.yml")


def _list(env, *extra):
    proc = run_cmd([str(BIN / "ansible-inventory"), "-i", INVENTORY, "--list", *extra], env)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(proc.stdout)


def _plain(value):
    """ansible-inventory marks API strings as unsafe: {"__ansible_unsafe": "x"} -> "x"."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def test_thousand_instances_over_forty_pages(lab_factory, tmp_path):
    lab = lab_factory(instances=generate_instances(1000))
    proc, data = _list(ansible_env(lab, tmp_path), "--flush-cache")
    listing = [r for r in lab.state.requests if r[1] == "/api/v1/instances/"]
    assert len(listing) == 40
    hostvars = _plain(data["_meta"]["hostvars"])
    running = [r for r in lab.state.instances.values() if r["actual_status"] == "running"]
    assert len(hostvars) == len(running) == 960
    assert sorted(data["vastai"]["hosts"]) == sorted(hostvars)
    assert sorted(data["vastllm"]["hosts"]) == sorted(hostvars)  # site.yml's group
    one = hostvars["lab-0001"]
    assert one["ansible_host"] == "127.0.0.1"
    assert one["ansible_user"] == "root"
    assert one["vastai_status"] == "running"
    assert one["vastai_ports"]["22/tcp"][0]["HostPort"] == str(one["ansible_port"])
    assert "lab-key" not in proc.stdout
    assert "lab-key" not in proc.stderr


def test_graph(lab, tmp_path):
    proc = run_cmd(
        [str(BIN / "ansible-inventory"), "-i", INVENTORY, "--graph", "--flush-cache"],
        ansible_env(lab, tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    for group in ("@vastai:", "@vastllm:", "@vastai_status_running:", "lab-0001"):
        assert group in proc.stdout


def test_cached_call_does_not_touch_the_api(lab, tmp_path):
    config = (REPO / "inventory" / "vastai.yml").read_text()
    config = config.replace(".cache/vastai-inventory", str(tmp_path / "cache"))
    path = tmp_path / "cached.vastai.yml"
    path.write_text(config)
    env = ansible_env(lab, tmp_path)
    cmd = [str(BIN / "ansible-inventory"), "-i", str(path), "--list"]
    first = run_cmd(cmd, env)
    assert first.returncode == 0, first.stderr
    calls = len(lab.state.requests)
    assert calls == 3
    second = run_cmd(cmd, env)
    assert second.returncode == 0, second.stderr
    assert len(lab.state.requests) == calls
    assert json.loads(first.stdout) == json.loads(second.stdout)
    third = run_cmd([*cmd, "--flush-cache"], env)
    assert third.returncode == 0
    assert len(lab.state.requests) == calls + 3
    for cached in (tmp_path / "cache").iterdir():
        assert "lab-key" not in cached.read_text()


@pytest.mark.parametrize(
    ("env_over", "needle"),
    [
        ({"VAST_API_KEY": "wrong-key"}, "rejected the API key (401 Unauthorized)"),
        ({"VAST_URL": "http://127.0.0.1:9"}, "cannot reach vast.ai at http://127.0.0.1:9"),
    ],
)
def test_errors_are_one_clear_message(lab, tmp_path, env_over, needle):
    # The shipped file plus short retries, so the network failure gives up quickly.
    path = tmp_path / "errors.vastai.yml"
    path.write_text(
        (REPO / "inventory" / "vastai.yml").read_text() + "retries: 1\nretry_backoff: 0.1\n"
    )
    env = ansible_env(lab, tmp_path, ANSIBLE_INVENTORY_UNPARSED_FAILED="true", **env_over)
    proc = run_cmd(
        [str(BIN / "ansible-inventory"), "-i", str(path), "--list", "--flush-cache"], env
    )
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "wrong-key" not in proc.stderr + proc.stdout


def test_site_playbook_targets_discovered_instances(lab, tmp_path):
    proc = run_cmd(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            INVENTORY,
            "--flush-cache",
            "--list-hosts",
            "site.yml",
        ],
        ansible_env(lab, tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert "hosts (56)" in proc.stdout
    assert "lab-0001" in proc.stdout


def test_emulator_cli_serves_on_loopback(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vastllm_lab",
            "vastai",
            "serve",
            "--port",
            "0",
            "--instances",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line
        assert "(30 instances)" in line
        url = line.split()[3]
        req = urllib.request.Request(
            url + "/api/v1/instances/?limit=25", headers={"Authorization": "Bearer lab-key"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = json.loads(resp.read())
        assert len(body["instances"]) == 25
        assert body["next_token"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
