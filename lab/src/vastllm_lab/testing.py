"""What the tests and the benchmarks share: a free loopback port, the Docker check, the
environment that runs Ansible from a checkout the way a user does, whether the local lab host
answers, and running Claude Code (`claude -p`) on loopback with a throw-away home.
(The redis-server and proxy processes of the integration tests: `testing_services`.)

    from vastllm_lab.testing import ansible_env, docker_available, free_port

    env = ansible_env(REPO, home=tmp_path, ANSIBLE_STDOUT_CALLBACK="json")
    subprocess.run([".venv/bin/ansible-playbook", ...], cwd=REPO, env=env)
    pytestmark = pytest.mark.skipif(not docker_available(), reason=...)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .host import docker_problem

__all__ = [
    "LAB_SSH_PORT",
    "ansible_env",
    "claude_code_env",
    "docker_available",
    "docker_problem",
    "find_claude_code",
    "free_port",
    "lab_host_up",
    "run_claude",
    "ssh_banner",
]

# Where `vastllm-lab host up` publishes the lab host's sshd (its default --ssh-port).
LAB_SSH_PORT = 2222

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


def lab_host_up(key_file: str | os.PathLike[str], port: int = LAB_SSH_PORT) -> bool:
    """Whether the local lab host is running: its key file exists and an SSH server greets on
    127.0.0.1:`port`."""
    return Path(key_file).exists() and ssh_banner(port)


def ssh_banner(port: int, timeout: float = 2) -> bool:
    """Whether an SSH server greets (`SSH-...`) on 127.0.0.1:`port` within `timeout` seconds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            return conn.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def find_claude_code(*, required: bool = False) -> str | None:
    """The `claude` CLI on PATH, or None; RuntimeError instead when `required` (as in CI)."""
    claude = shutil.which("claude")
    if claude is None and required:
        raise RuntimeError("Claude Code is not installed: scripts/setup.sh installs it from npm")
    return claude


def claude_code_env(
    base_url: str,
    token: str,
    home: str | os.PathLike[str],
    *,
    path: str = "/usr/local/bin:/usr/bin:/bin",
    **extra: str,
) -> dict[str, str]:
    """The whole environment of a Claude Code run against `base_url` (the proxy, or something
    in front of it): HOME and CLAUDE_CONFIG_DIR under `home`, no non-essential traffic, and any
    other HTTP(S) sent to a closed loopback port. `extra` comes last."""
    env = {
        "PATH": path,
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(Path(home) / ".claude"),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_AUTH_TOKEN": token,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        # anything not aimed at base_url goes to a closed loopback port
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    env.update(extra)
    return env


def run_claude(
    claude: str,
    prompt: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """`claude -p PROMPT ARGS...` (print mode), output captured as text, no stdin."""
    return subprocess.run(
        [claude, "-p", prompt, *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
