"""What the tests and the benchmarks share: a free loopback port, the Docker check, and the
environment that runs Ansible from a checkout the way a user does.

    from vastllm_lab.testing import ansible_env, docker_available, free_port

    env = ansible_env(REPO, home=tmp_path, ANSIBLE_STDOUT_CALLBACK="json")
    subprocess.run([".venv/bin/ansible-playbook", ...], cwd=REPO, env=env)
    pytestmark = pytest.mark.skipif(not docker_available(), reason=...)
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from .host import docker_problem

__all__ = ["ansible_env", "docker_available", "docker_problem", "free_port"]

# Settings of the caller's shell that would change what the commands under test do or reach.
_DROPPED_PREFIXES = ("ANSIBLE_", "VAST_")
_DROPPED_NAMES = ("PYTEST_CURRENT_TEST",)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it; free again once returned)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def docker_available(image: str | None = None) -> bool:
    """Whether the Docker engine answers (and `image`, when given, is present)."""
    return docker_problem(image) is None


def ansible_env(
    repo: str | os.PathLike[str],
    *,
    home: str | os.PathLike[str] | None = None,
    base: Mapping[str, str] | None = None,
    **overrides: str,
) -> dict[str, str]:
    """The environment of an `ansible*` command run from the checkout `repo`.

    `base` (default: this process's environment) without the caller's ANSIBLE_* and VAST_*
    settings, then: the repository's ansible.cfg, no colours, this virtualenv's bin/ first on
    PATH. With `home`: HOME and Ansible's local temp directory under it (nothing is written to
    the real home). `overrides` come last.
    """
    source = os.environ if base is None else base
    env = {
        key: value
        for key, value in source.items()
        if not key.startswith(_DROPPED_PREFIXES) and key not in _DROPPED_NAMES
    }
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        ANSIBLE_CONFIG=str(Path(repo) / "ansible.cfg"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        PATH=os.pathsep.join(p for p in (bin_dir, env.get("PATH", "")) if p),
    )
    if home is not None:
        env.update(HOME=str(home), ANSIBLE_LOCAL_TEMP=str(Path(home) / "ansible-tmp"))
    env.update(overrides)
    return env
