"""The `service` role's contract on a real container without systemd (as on vast.ai): its entry
points main, program, restart, wait_http and wait_command, called by FQCN as other roles do."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vastllm_lab.testing import ansible_env, docker_available

REPO = Path(__file__).resolve().parents[3]
IMAGE = "vastllm/lab-base:bookworm"
PORT = 18080
RECAP = re.compile(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(
        not docker_available(IMAGE) and os.environ.get("CI") != "true",
        reason="needs Docker and the lab image (scripts/setup.sh)",
    ),
]


def call(entry: str, **options: Any) -> dict[str, Any]:
    """A task that calls one entry point of the service role."""
    task: dict[str, Any] = {
        "name": f"service {entry}",
        "ansible.builtin.include_role": {"name": "vastllm.stack.service"},
    }
    if entry != "main":
        task["ansible.builtin.include_role"]["tasks_from"] = entry
    if options:
        task["vars"] = options
    return task


def web(**options: Any) -> list[dict[str, Any]]:
    """Define the test program `web` (a static HTTP server) and wait until it answers."""
    return [
        call("program", service_name="web",
             service_command=f"/usr/bin/python3 -u -m http.server {PORT} --bind 127.0.0.1 -d /tmp",
             **options),
        call("wait_http", service_name="web", service_wait_url=f"http://127.0.0.1:{PORT}/"),
    ]  # fmt: skip


@dataclass
class Run:
    rc: int
    out: str

    @property
    def changed(self) -> int:
        match = RECAP.search(self.out)
        assert match, self.out[-3000:]
        return int(match.group(2))


@dataclass
class Host:
    name: str
    tmp: Path

    def sh(self, cmd: str) -> str:
        return subprocess.run(
            ["docker", "exec", self.name, "sh", "-c", cmd],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()

    def pid(self) -> str:
        return self.sh("supervisorctl pid web")

    def running(self) -> bool:
        """Whether supervisord calls `web` RUNNING (STARTING for its first 2 s: startsecs)."""
        deadline = time.monotonic() + 10
        while "STARTING" in (status := self.sh("supervisorctl status web")):
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return "RUNNING" in status

    def play(self, tasks: list[dict[str, Any]], handlers: list[dict[str, Any]] | None = None,
             check: bool = False) -> Run:  # fmt: skip
        playbook = self.tmp / f"play-{uuid.uuid4().hex[:6]}.yml"
        play: dict[str, Any] = {"hosts": "all", "gather_facts": False, "tasks": tasks}
        if handlers:
            play["handlers"] = handlers
        playbook.write_text(json.dumps([play]))  # JSON is YAML
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("ansible-playbook")), "-i", f"{self.name},",
             "-c", "community.docker.docker", str(playbook), *(["--check"] if check else [])],
            cwd=REPO, capture_output=True, text=True, check=False,
            env=ansible_env(REPO, ANSIBLE_PIPELINING="1"),
        )  # fmt: skip
        return Run(proc.returncode, proc.stdout + proc.stderr)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    name = f"vastllm-servicetest-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["docker", "run", "-d", "--init", "--name", name, IMAGE], check=True, capture_output=True
    )
    try:
        yield Host(name, tmp_path_factory.mktemp("service"))
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_program_runs_and_a_second_run_changes_nothing(host: Host) -> None:
    first = host.play([call("main"), *web()])
    assert first.rc == 0, first.out[-3000:]
    assert host.running()
    assert host.sh("stat -c %a /etc/supervisor/conf.d/web.conf") == "600"
    pid = host.pid()

    again = host.play(web())
    assert again.rc == 0, again.out[-3000:]
    assert again.changed == 0, again.out[-3000:]
    assert host.pid() == pid

    check = host.play(web(), check=True)
    assert check.rc == 0, check.out[-3000:]
    assert check.changed == 0, check.out[-3000:]


def test_changed_definition_restarts_the_program_once(host: Host) -> None:
    pid = host.pid()
    run = host.play(web(service_environment={"WEB_SETTING": "2"}))
    assert run.rc == 0, run.out[-3000:]
    assert host.pid() != pid
    assert 'WEB_SETTING="2"' in host.sh("cat /etc/supervisor/conf.d/web.conf")
    # `supervisorctl update` applied the new definition (a restart); no second restart on top of it
    assert re.search(
        r"TASK \[vastllm.stack.service : Load the definition of web\][^\n]*\nchanged:", run.out
    )
    assert re.search(r"TASK \[vastllm.stack.service : Restart web\][^\n]*\nskipping:", run.out), (
        run.out[-3000:]
    )
    assert run.changed == 2, run.out[-3000:]  # the program file and the update


def test_service_restart_restarts_an_unchanged_program(host: Host) -> None:
    pid = host.pid()
    run = host.play(web(service_environment={"WEB_SETTING": "2"}, service_restart=True))
    assert run.rc == 0, run.out[-3000:]
    assert host.pid() != pid
    assert run.changed == 1, run.out[-3000:]


def test_a_stopped_program_is_started(host: Host) -> None:
    host.sh("supervisorctl stop web")
    run = host.play(web(service_environment={"WEB_SETTING": "2"}))
    assert run.rc == 0, run.out[-3000:]
    assert run.changed == 1, run.out[-3000:]
    assert host.running()


def test_restart_entry_point_after_a_change_of_the_caller(host: Host) -> None:
    pid = host.pid()
    change = {"name": "Something the program reads changed", "ansible.builtin.command": "true",
              "changed_when": True, "register": "web_input"}  # fmt: skip
    restart = call("restart", service_name="web") | {"when": "web_input is changed"}
    run = host.play([change, restart])
    assert run.rc == 0, run.out[-3000:]
    assert host.pid() != pid
    assert host.running()


def test_wait_command_passes_on_the_expected_output(host: Host) -> None:
    run = host.play([call("wait_command", service_name="web",
                          service_wait_command=["sh", "-c", "echo PONG"],
                          service_wait_stdout="PONG")])  # fmt: skip
    assert run.rc == 0, run.out[-3000:]
    assert run.changed == 0


def test_wait_command_fails_with_its_output_and_the_log(host: Host) -> None:
    run = host.play([call("wait_command", service_name="web", service_wait_timeout=2,
                          service_wait_command=["sh", "-c", "echo LOADING; exit 3"])])  # fmt: skip
    assert run.rc != 0
    flat = " ".join(run.out.split())
    assert "web is not ready: `sh -c echo LOADING; exit 3` did not succeed within 2 s" in flat, (
        flat[-3000:]
    )
    assert "exit code 3" in flat
    assert "LOADING" in flat
    assert "Last lines of its log (/var/log/vastllm/web.log)" in flat
    assert "Serving HTTP on 127.0.0.1" in flat  # the program's own log lines


def test_wait_http_fails_with_the_log(host: Host) -> None:
    run = host.play([call("wait_http", service_name="web", service_wait_timeout=2,
                          service_wait_url=f"http://127.0.0.1:{PORT}/missing")])  # fmt: skip
    assert run.rc != 0
    flat = " ".join(run.out.split())
    assert (
        f"web is not ready: it did not answer http://127.0.0.1:{PORT}/missing with HTTP 200" in flat
    )
    assert "last answer: 404" in flat
    assert "Last lines of its log (/var/log/vastllm/web.log)" in flat


def test_the_manager_is_decided_once_per_host(host: Host) -> None:
    run = host.play([call("main"), call("main", service_manager="systemd")])
    assert run.rc != 0
    assert "is already supervisor; service_manager=systemd disagrees" in run.out, run.out[-3000:]
    assert run.out.count("TASK [vastllm.stack.service : Read what PID 1 is]") == 1
