"""Discovery -> provisioning over real SSH, with the lab host standing in for an instance.

Needs the local lab host (`vastllm-lab host up`: a Docker container with sshd published on
127.0.0.1:2222, key in .lab/id_ed25519); skipped when it is not running.
"""

from __future__ import annotations

import json

import pytest
from vastai_itest_helpers import BIN, REPO, ansible_env, run_cmd

from vastllm_lab.testing import LAB_SSH_PORT, lab_host_up
from vastllm_lab.vastai.fixtures import make_instance

pytestmark = pytest.mark.docker

KEY = REPO / ".lab" / "id_ed25519"


@pytest.fixture
def lab_host():
    if not lab_host_up(KEY):
        pytest.skip("the lab host is not running (vastllm-lab host up)")


def test_discovered_instance_is_reachable_over_ssh(lab_host, lab_factory, tmp_path):
    seed = make_instance(1001, label="lab-1", ssh_port=LAB_SSH_PORT, direct_port=LAB_SSH_PORT)
    lab = lab_factory(instances=[seed])
    config = tmp_path / "lab.vastai.yml"
    config.write_text(
        json.dumps(
            {
                "plugin": "vastllm.stack.vastai",
                "groups": {"vastllm": "vastai_status == 'running'"},
                "compose": {
                    "ansible_ssh_private_key_file": f"'{KEY}'",
                    "ansible_python_interpreter": "'/usr/bin/python3'",
                },
            }
        )
    )
    proc = run_cmd(
        [str(BIN / "ansible"), "-i", str(config), "vastllm", "-m", "ansible.builtin.command",
         "-a", "cat /etc/hostname"],
        ansible_env(lab, tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lab-1 | CHANGED | rc=0" in proc.stdout


def test_provision_then_stack_over_ssh(lab_host, lab_factory, tmp_path):
    lab = lab_factory(instances=[], loading_delay=0.3, ssh_port=LAB_SSH_PORT)
    stack = tmp_path / "stack.yml"
    stack.write_text(
        json.dumps(
            [
                {
                    "name": "stand-in stack",
                    "hosts": "{{ vastllm_hosts | default('vastllm') }}",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "remote command",
                            "ansible.builtin.command": "cat /etc/hostname",
                            "register": "h",
                            "changed_when": False,
                        },
                        {"name": "show", "ansible.builtin.debug": {"msg": "REMOTE {{ h.stdout }}"}},
                    ],
                }
            ]
        )
    )
    proc = run_cmd(
        [
            str(BIN / "ansible-playbook"), "-i", "localhost,", "playbooks/provision.yml",
            "-e", "vastllm_provision_max_dph=2",
            "-e", "vastllm_provision_poll_interval=0.3",
            "-e", "vastllm_provision_run_stack=true",
            "-e", f"vastllm_stack_playbook={stack}",
            "-e", f"ansible_ssh_private_key_file={KEY}",
        ],
        ansible_env(lab, tmp_path),
        timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "REMOTE " in proc.stdout
    assert [r["label"] for r in lab.state.instances.values()] == ["vastllm-1"]
