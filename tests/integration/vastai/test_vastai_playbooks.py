"""The vastai_instance module and playbooks/provision.yml / teardown.yml against the emulator.

Rented instances report 127.0.0.1 and the port of a local SSH-banner listener (the
emulator's --ssh-port), so the module's SSH wait is real and bounded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from vastai_itest_helpers import BIN, ansible_env, run_cmd

PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIlabkey lab@test"


@pytest.fixture
def market(lab_factory, banner):
    """An empty account; new instances run after 0.3 s and answer SSH on the listener."""
    return lab_factory(instances=[], loading_delay=0.3, ssh_port=banner.port)


@pytest.fixture
def home(tmp_path):
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    (ssh / "id_ed25519.pub").write_text(PUBKEY + "\n")
    return tmp_path


def playbook(lab, tmp_path, path, *extra, check=False):
    cmd = [str(BIN / "ansible-playbook"), "-i", "localhost,", str(path), *extra]
    if check:
        cmd.append("--check")
    return run_cmd(cmd, ansible_env(lab, tmp_path), timeout=180)


def provision(lab, tmp_path, *extra, check=False):
    return playbook(
        lab,
        tmp_path,
        "playbooks/provision.yml",
        "-e",
        "vastllm_provision_max_dph=1.0",
        "-e",
        "vastllm_provision_poll_interval=0.1",
        "-e",
        "vastllm_provision_wait_timeout=30",
        *extra,
        check=check,
    )


def flat(text: str) -> str:
    """Undo the YAML line wrapping of the callback output."""
    return " ".join(text.split()).replace("''", "'")


def recap(stdout: str, host: str = "localhost") -> dict[str, int]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith(host) and "ok=" in ln)
    return {k: int(v) for k, v in (part.split("=") for part in line.split(":", 1)[1].split())}


def write_play(tmp_path: Path, tasks: list[dict]) -> Path:
    play = [
        {
            "name": "vastai_instance test",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
            "tasks": tasks,
        }
    ]
    path = tmp_path / "play.yml"
    path.write_text(json.dumps(play))
    return path


def test_provision_rents_waits_adds_hosts_and_runs_the_stack(market, banner, home):
    stack = home / "stack.yml"
    stack.write_text(
        json.dumps(
            [
                {
                    "name": "stand-in stack",
                    "hosts": "{{ vastllm_hosts | default('vastllm') }}",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "record",
                            "ansible.builtin.debug": {
                                "msg": "STACK {{ inventory_hostname }} "
                                "{{ ansible_host }}:{{ ansible_port }} {{ vastai_id }}"
                            },
                        }
                    ],
                }
            ]
        )
    )
    proc = provision(
        market,
        home,
        "-e",
        "vastllm_provision_count=2",
        "-e",
        "vastllm_provision_run_stack=true",
        "-e",
        f"vastllm_stack_playbook={stack}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    labels = sorted(r["label"] for r in market.state.instances.values())
    assert labels == ["vastllm-1", "vastllm-2"]
    for row in market.state.instances.values():
        assert row["actual_status"] == "running"
        assert market.state.ssh_keys[row["id"]] == [PUBKEY]
        assert "8000/tcp" in row["ports"]  # the proxy port is mapped
        assert f"STACK {row['label']} 127.0.0.1:{banner.port} {row['id']}" in proc.stdout
    assert banner.connections >= 2  # the SSH wait really connected
    assert "would rent" not in proc.stdout
    assert "lab-key" not in proc.stdout + proc.stderr

    again = provision(market, home, "-e", "vastllm_provision_count=2")
    assert again.returncode == 0, again.stdout
    assert recap(again.stdout)["changed"] == 0
    assert len(market.state.instances) == 2


def test_provision_without_run_stack_imports_site_but_runs_nothing(market, home):
    proc = provision(market, home)  # the real ../site.yml, whose plays then match no host
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "vastllm-1" in proc.stdout
    assert proc.stdout.count("PLAY [") >= 2  # site.yml was imported...
    assert "skipping: no hosts matched" in proc.stdout  # ...and skipped whole
    assert not [ln for ln in proc.stdout.splitlines() if ln.startswith("vastllm-1 ")]
    assert "Could not match supplied host pattern" not in proc.stderr


def test_check_mode_says_what_would_be_rented_and_rents_nothing(market, home):
    proc = provision(market, home, check=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(
        r"would rent offer \d+: 1x [A-Z0-9 ]+ in [^$]+ at \$\d+\.\d{4}/h", flat(proc.stdout)
    )
    assert market.state.instances == {}


def test_cost_guard(market, home):
    proc = provision(market, home, "-e", "vastllm_provision_max_dph=0.01")
    assert proc.returncode != 0
    assert "no vast.ai offer matches the criteria at or below $0.01/h" in flat(proc.stdout)
    assert market.state.instances == {}
    missing = playbook(market, home, "playbooks/provision.yml")
    assert missing.returncode != 0
    assert "Set vastllm_provision_max_dph" in flat(missing.stdout)
    assert market.state.instances == {}


def test_teardown_refuses_without_exact_label(market, home):
    for extra in ([], ["-e", "vastllm_teardown_label="], ["-e", "vastllm_teardown_label=vast*"]):
        proc = playbook(market, home, "playbooks/teardown.yml", *extra)
        assert proc.returncode != 0
        assert "Refusing to destroy" in flat(proc.stdout)


def test_teardown_destroys_by_label_idempotently(market, home):
    from vastllm_lab.vastai.fixtures import make_instance

    market.state.add_instance(make_instance(1, label="vastllm-1"))
    market.state.add_instance(make_instance(2, label="vastllm-2"))
    proc = playbook(
        market, home, "playbooks/teardown.yml", "-e", "vastllm_teardown_label=vastllm-1"
    )
    assert proc.returncode == 0, proc.stdout
    assert "destroyed 1 instance(s) labelled 'vastllm-1'" in flat(proc.stdout)
    assert [r["label"] for r in market.state.instances.values()] == ["vastllm-2"]
    again = playbook(
        market, home, "playbooks/teardown.yml", "-e", "vastllm_teardown_label=vastllm-1"
    )
    assert again.returncode == 0
    assert recap(again.stdout)["changed"] == 0


def test_module_stop_start_absent_and_facts(market, home):
    rent = {
        "name": "rent",
        "vastllm.stack.vastai_instance": {
            "label": "solo",
            "max_dph": 1.0,
            "image": "img:1",
            "poll_interval": 0.1,
            "wait_timeout": 30,
            "api_key": "lab-key",
        },
        "register": "r",
    }
    tasks = [
        rent,
        {
            "name": "facts",
            "ansible.builtin.copy": {
                "content": "{{ r.hostvars | to_json }}",
                "dest": str(home / "facts.json"),
                "mode": "0600",
            },
        },
        {
            "name": "stop",
            "vastllm.stack.vastai_instance": {"label": "solo", "state": "stopped"},
            "register": "s",
        },
        {
            "name": "stop again",
            "vastllm.stack.vastai_instance": {"label": "solo", "state": "stopped"},
        },
        {
            "name": "start",
            "vastllm.stack.vastai_instance": {
                "label": "solo",
                "state": "running",
                "max_dph": 1.0,
                "image": "img:1",
                "poll_interval": 0.1,
            },
        },
        {"name": "absent", "vastllm.stack.vastai_instance": {"label": "solo", "state": "absent"}},
        {
            "name": "absent again",
            "vastllm.stack.vastai_instance": {"label": "solo", "state": "absent"},
        },
    ]
    proc = playbook(market, home, write_play(home, tasks), "-v", "--diff")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert recap(proc.stdout)["changed"] == 5  # rent, facts file, stop, start, absent
    facts = json.loads((home / "facts.json").read_text())
    assert facts["ansible_host"] == "127.0.0.1"
    assert facts["ansible_user"] == "root"
    assert facts["vastai_label"] == "solo"
    assert facts["vastai_status"] == "running"
    assert "lab-key" not in proc.stdout + proc.stderr  # no_log on api_key, even with -v
    assert "status: exited" in proc.stdout  # diff of the stop
    assert market.state.instances == {}


def test_module_fails_clearly(market, home, lab_factory):
    tasks = [
        {
            "name": "stop missing",
            "vastllm.stack.vastai_instance": {"label": "ghost", "state": "stopped"},
        },
    ]
    proc = playbook(market, home, write_play(home, tasks))
    assert proc.returncode != 0
    assert "no instance labelled 'ghost' to stop" in flat(proc.stdout)

    proc = playbook(
        market, home, write_play(home, [{"vastllm.stack.vastai_instance": {"label": "x"}}])
    )
    assert proc.returncode != 0
    assert "max_dph" in proc.stdout

    tasks = [
        {"vastllm.stack.vastai_instance": {"label": "x", "state": "absent", "api_key": "bad-key"}}
    ]
    proc = playbook(market, home, write_play(home, tasks))
    assert proc.returncode != 0
    assert "rejected the API key (401 Unauthorized)" in flat(proc.stdout)
    assert "bad-key" not in proc.stdout


def test_duplicate_labels_are_refused(market, home):
    from vastllm_lab.vastai.fixtures import make_instance

    market.state.add_instance(make_instance(1, label="twin"))
    market.state.add_instance(make_instance(2, label="twin"))
    tasks = [
        {
            "vastllm.stack.vastai_instance": {
                "label": "twin",
                "max_dph": 1.0,
                "image": "i",
                "wait": False,
            }
        }
    ]
    proc = playbook(market, home, write_play(home, tasks))
    assert proc.returncode != 0
    assert "matches 2 instances (1, 2)" in flat(proc.stdout)


def test_ssh_wait_is_bounded(lab_factory, home):
    # Rented instances point at a loopback port where nothing listens.
    quiet = lab_factory(instances=[], loading_delay=0.1, ssh_port=9)
    tasks = [
        {
            "vastllm.stack.vastai_instance": {
                "label": "mute",
                "max_dph": 1.0,
                "image": "i",
                "wait_timeout": 2,
                "poll_interval": 0.2,
            }
        }
    ]
    proc = playbook(quiet, home, write_play(home, tasks))
    assert proc.returncode != 0
    assert "timed out after 2s waiting for SSH to answer" in flat(proc.stdout)
    assert len(quiet.state.instances) == 1  # rented: it is billed, the user must know


def test_lost_rent_reply_is_recovered_not_rented_twice(market, home):
    from vastllm_lab.vastai.state import Fault

    # The rental happens, but the reply is a 502: the module must find it by label.
    market.state.add_fault(Fault(status=502, path_prefix="/api/v0/asks/", after=True))
    tasks = [
        {
            "vastllm.stack.vastai_instance": {
                "label": "flaky",
                "max_dph": 1.0,
                "image": "i",
                "poll_interval": 0.1,
                "wait_timeout": 30,
            }
        }
    ]
    proc = playbook(market, home, write_play(home, tasks))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "renting reported an error" in flat(proc.stdout + proc.stderr)
    assert [r["label"] for r in market.state.instances.values()] == ["flaky"]
    rents = [r for r in market.state.requests if r[1].startswith("/api/v0/asks/")]
    assert len(rents) == 1


def test_stopped_instance_is_started_with_only_label_and_state(market, home):
    """`vastllm up` after an idle stop: no max_dph/image (nothing is rented), yet it starts."""
    market.state.add_instance(
        {"id": 5151, "label": "napping", "actual_status": "exited", "intended_status": "stopped"}
    )
    tasks = [
        {
            "name": "start",
            "vastllm.stack.vastai_instance": {
                "label": "napping",
                "state": "running",
                "poll_interval": 0.1,
                "wait_timeout": 30,
            },
            "register": "r",
        },
        {
            "name": "show",
            "ansible.builtin.debug": {"msg": "STARTED {{ r.actions }} {{ r.changed }}"},
        },
        {
            "name": "rent needs the cap",
            "vastllm.stack.vastai_instance": {
                "label": "never-there",
                "state": "running",
                "image": "img:1",
            },
            "register": "refused",
            "ignore_errors": True,
        },
        {"name": "why", "ansible.builtin.debug": {"msg": "REFUSED {{ refused.msg }}"}},
    ]
    proc = playbook(market, home, write_play(home, tasks))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = flat(proc.stdout)
    assert "STARTED ['start'] True" in out, out
    assert market.state.instances[5151]["actual_status"] == "running"
    assert market.state.instances[5151]["intended_status"] == "running"
    assert "REFUSED no instance labelled 'never-there' exists, and renting one needs max_dph" in out
    assert [r["label"] for r in market.state.instances.values()] == ["napping"]
