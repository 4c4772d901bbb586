"""The whole flow, once: up -> status -> Claude Code through the kept tunnel (sourcing the env
file: a prompt, then a tool-use turn) -> idle stop by the on-host monitor -> up restarts it ->
down --destroy.

The lab host stands in for the rented instance. Two things a real vast.ai container has are given
to it by the test: the vast.ai API (the double, on this machine's loopback) is reached from the
container through a reverse SSH tunnel, and the instance-scoped `CONTAINER_ID` /
`CONTAINER_API_KEY` that vast.ai puts into PID 1's environment come from a file in that format
(the monitor's `pid1_environ` setting).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from cli_helpers import LAB_KEY, REPO

from vastllm_lab.testing import LAB_SSH_PORT, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3600)]
CLAUDE = REPO / ".cache" / "npm" / "node_modules" / ".bin" / "claude"
FAKE_ENVIRON = "/root/.vastllm-test-pid1-environ"
SSH = ["ssh", "-i", str(LAB_KEY), "-p", str(LAB_SSH_PORT), "-o", "BatchMode=yes",
       "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
       "-o", "LogLevel=ERROR"]  # fmt: skip


def on_lab_host(command: str) -> str:
    proc = subprocess.run([*SSH, "root@127.0.0.1", command], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_up_status_claude_idle_stop_up_destroy(lab_host, double, cli_factory, tmp_path):
    # Claude Code is installed by scripts/setup.sh; CI must run this test, never skip it.
    if not CLAUDE.exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"{CLAUDE} is missing: scripts/setup.sh installs Claude Code")
        pytest.skip(f"{CLAUDE} is missing (scripts/setup.sh installs it)")
    server = double(instances=[])
    cli = cli_factory(server)
    api_port = free_port()
    double_port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    # the container reaches the double on its own loopback, as a vast.ai container reaches the API
    reverse = subprocess.Popen(
        [*SSH, "-N", "-o", "ExitOnForwardFailure=yes",
         "-R", f"127.0.0.1:{api_port}:127.0.0.1:{double_port}", "root@127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        on_lab_host(f"rm -f {FAKE_ENVIRON}")
        # the monitor stops the instance after 1 idle minute (read from its config file)
        settings = {
            "monitor_idle_stop_minutes": 1,
            "monitor_extra_settings": {
                "vastai_url": f"http://127.0.0.1:{api_port}",
                "pid1_environ": FAKE_ENVIRON,
            },
        }
        (cli.home / "idle.json").write_text(json.dumps(settings))
        port = str(free_port())
        up = cli.json("up", "--max-price", "1.0", "--local-port", port, "-e",
                      f"@{cli.home / 'idle.json'}")  # fmt: skip
        assert up["ok"], up
        assert up["rented"], up
        iid = int(up["id"])
        # what vast.ai puts into PID 1's environment: the instance-scoped credential
        env = server.state.container_env(iid)
        assert env["CONTAINER_API_KEY"]
        environ = "".join(f"{k}={v}\\0" for k, v in env.items())
        on_lab_host(f"umask 077; printf {shlex.quote(environ)} > {FAKE_ENVIRON}")

        status = cli.json("status")
        row = next(r for r in status["instances"] if r["label"] == "vastllm-1")
        assert row["state"] == "running"
        assert row["proxy"] == "ok"
        assert row["tunnel"] == "up"
        assert row["idle"] is not None
        assert row["context_window"]

        env_file = up["env_file"]
        assert Path(env_file).stat().st_mode & 0o777 == 0o600
        prompt = "Reply with the single word: ready"
        proc = subprocess.run(
            ["bash", "-c", f'source "{env_file}" && "{CLAUDE}" -p "{prompt}"'],
            capture_output=True, text=True, timeout=600, check=False,
            env={**os.environ, "HOME": str(tmp_path)},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.strip(), proc.stderr

        # a tool-use turn through the tunnel: the model calls Bash (`lab`, put on PATH here),
        # Claude Code runs it, the result goes back, the model's final text arrives
        bindir = tmp_path / "bin"
        bindir.mkdir()
        (bindir / "lab").write_text(f"#!/bin/sh\necho ran > {tmp_path}/lab-ran\necho LAB-OUT\n")
        (bindir / "lab").chmod(0o755)
        tool_args = "--max-turns 3 --tools Bash --allowedTools Bash --output-format json"
        proc = subprocess.run(
            ["bash", "-c", f'source "{env_file}" && "{CLAUDE}" -p '
             f'"Use the Bash tool to run the lab command" {tool_args}'],
            capture_output=True, text=True, timeout=600, check=False,
            env={**os.environ, "HOME": str(tmp_path), "PATH": f"{bindir}:{os.environ['PATH']}"},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert (tmp_path / "lab-ran").exists(), proc.stdout
        assert "LAB-OUT" in json.loads(proc.stdout)["result"]

        deadline = time.monotonic() + 420  # idle stop: 1 min without requests + monitor rounds
        while time.monotonic() < deadline:
            instance = next(iter(server.state.instances.values()))
            if instance.get("intended_status") == "stopped":
                break
            time.sleep(5)
        else:
            raise AssertionError("the monitor did not stop the idle instance")
        assert server.state.stopped_by[iid] == "container"

        again = cli.json("up", "--max-price", "1.0", "--local-port", port)
        assert again["ok"], again
        assert again["started"], again
        assert not again["rented"], again
        assert cli.json("down", "--destroy", "--yes")["destroyed"]
        assert not server.state.instances
    finally:
        reverse.terminate()
        reverse.wait(timeout=10)
        subprocess.run([*SSH, "root@127.0.0.1", f"rm -f {FAKE_ENVIRON}"], capture_output=True,
                       timeout=60, check=False)  # fmt: skip
