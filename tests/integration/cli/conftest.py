"""Fixtures of the CLI integration tests: the vast.ai double, the lab host's sshd, a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_helpers import LAB_KEY, LAB_VARS, REPO

from vastllm_lab.testing import LAB_SSH_PORT, ansible_env, lab_host_up
from vastllm_lab.vastai.server import LabServer
from vastllm_lab.vastai.state import LabState


@pytest.fixture
def lab_host() -> None:
    if not lab_host_up(LAB_KEY):
        pytest.skip("the lab host is not running (vastllm-lab host up)")


@pytest.fixture
def double() -> Iterator[Callable[..., LabServer]]:
    servers: list[LabServer] = []

    def make(**kw: object) -> LabServer:
        kw.setdefault("api_keys", ["lab-key"])
        kw.setdefault("loading_delay", 0.3)
        kw.setdefault("ssh_port", LAB_SSH_PORT)
        server = LabServer(LabState(**kw)).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


class Cli:
    """Runs `python -m vastllm.cli` from the checkout with its own VASTLLM_HOME."""

    def __init__(self, home: Path, url: str) -> None:
        self.home = home
        self.url = url
        (home / "lab-vars.json").write_text(json.dumps(LAB_VARS))
        (home / "config.toml").write_text(
            f'ssh_key = "{LAB_KEY}"\n'
            f'extra_vars = ["@{home / "lab-vars.json"}"]\n'
            'playbook = "playbooks/lab.yml"\n'
        )
        self.env = ansible_env(REPO, home=home, VASTLLM_HOME=str(home), VAST_URL=url,
                               VAST_API_KEY="lab-key")  # fmt: skip

    def __call__(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vastllm.cli", *args], cwd=REPO, env=self.env,
            capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def json(self, *args: str, timeout: float = 900) -> dict:
        proc = self(*args, "--json", timeout=timeout)
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(proc.stdout + proc.stderr) from None


@pytest.fixture
def cli_factory(tmp_path: Path) -> Iterator[Callable[[LabServer], Cli]]:
    made: list[Cli] = []

    def make(server: LabServer) -> Cli:
        home = tmp_path / f"vh{len(made)}"
        home.mkdir(exist_ok=True)
        cli = Cli(home, server.url)
        made.append(cli)
        return cli

    yield make
    for cli in made:  # never leave a keeper behind
        for state in (cli.home / "state" / "tunnels").glob("*.json"):
            from vastllm.cli.tunnel import stop_keeper

            stop_keeper(state)


os.environ.setdefault("VASTLLM_REPO", str(REPO))
