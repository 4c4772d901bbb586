"""The whole flow, once: up -> status -> Claude Code through the kept tunnel (sourcing the env
file) -> idle stop by the on-host monitor -> up restarts it -> down --destroy.

Needs the lab host, playbooks/verify.yml and the monitor wired into the roles (issue 10); skipped
with the missing part named until they exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from cli_helpers import REPO

from vastllm_lab.testing import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3600)]
CLAUDE = REPO / ".cache" / "npm" / "node_modules" / ".bin" / "claude"


def test_up_status_claude_idle_stop_up_destroy(lab_host, double, cli_factory):
    # Claude Code is installed by scripts/setup.sh; CI must run this test, never skip it.
    if not CLAUDE.exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"{CLAUDE} is missing: scripts/setup.sh installs Claude Code")
        pytest.skip(f"{CLAUDE} is missing (scripts/setup.sh installs it)")
    server = double(instances=[])
    cli = cli_factory(server)
    # the monitor stops the instance after 1 idle minute (read from its config file on the host)
    (cli.home / "idle.json").write_text(json.dumps({"monitor_idle_stop_minutes": 1}))
    port = str(free_port())
    up = cli.json("up", "--max-price", "1.0", "--local-port", port, "-e",
                  f"@{cli.home / 'idle.json'}")  # fmt: skip
    assert up["ok"] and up["rented"], up  # noqa: PT018
    iid = up["id"]
    # the monitor on the lab host calls the double with the instance-scoped key
    env = server.state.container_env(int(iid))
    assert env["CONTAINER_API_KEY"]

    status = cli.json("status")
    row = next(r for r in status["instances"] if r["label"] == "vastllm-1")
    assert row["state"] == "running"
    assert row["proxy"] == "ok"
    assert row["tunnel"] == "up"
    assert row["idle"] is not None
    assert row["context_window"]

    env_file = up["env_file"]
    prompt = "Reply with the single word: ready"
    proc = subprocess.run(
        ["bash", "-c", f'source "{env_file}" && "{CLAUDE}" -p "{prompt}"'],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stdout + proc.stderr  # noqa: PT018

    deadline = time.monotonic() + 300  # idle stop: 1 min + monitor rounds
    while time.monotonic() < deadline:
        instance = next(iter(server.state.instances.values()))
        if instance.get("intended_status") == "stopped":
            break
        time.sleep(5)
    else:
        raise AssertionError("the monitor did not stop the idle instance")
    assert server.state.stopped_by[int(iid)] == "container"

    again = cli.json("up", "--max-price", "1.0", "--local-port", port)
    assert again["ok"] and again["started"] and not again["rented"], again  # noqa: PT018
    assert cli.json("down", "--destroy", "--yes")["destroyed"]
    assert not server.state.instances
