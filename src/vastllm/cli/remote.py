"""SSH to an instance: the address the inventory computes, the options, and the few remote reads
of the CLI (the proxy key, the monitor's report, Ollama's loaded models)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vastllm.cli.config import CliError

KEY_FILE = "/etc/vastllm/proxy-api-key"
MONITOR_PATH = "/opt/vastllm/venv/bin:/opt/vastllm/bin:/usr/local/bin:/usr/bin:/bin"
SEPARATOR = "----vastllm-separator----"


@dataclass(frozen=True)
class SshTarget:
    """How to reach an instance's sshd (``mode``: direct or proxy, as the inventory says)."""

    host: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    mode: str = "direct"

    def options(self, connect_timeout: int = 10) -> list[str]:
        return [
            "-p", str(self.port),
            "-i", str(self.key_file),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={connect_timeout}",
            "-o", "StrictHostKeyChecking=accept-new",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "key_file": str(self.key_file),
            "known_hosts": str(self.known_hosts),
            "mode": self.mode,
        }


def target_for(
    instance: Mapping[str, Any], connect_with: str, key_file: Path, known_hosts: Path
) -> SshTarget | None:
    """The instance's SSH address as the inventory computes it (the collection's
    ``vastai_hosts.ssh_endpoint``: direct when 22/tcp is mapped, else vast.ai's SSH proxy)."""
    from ansible_collections.vastllm.stack.plugins.module_utils.vastai_hosts import ssh_endpoint

    host, port, mode = ssh_endpoint(instance, connect_with)
    if host is None or port is None:
        return None
    return SshTarget(str(host), int(port), "root", key_file, known_hosts, str(mode))


def ssh(target: SshTarget, command: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    target.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    argv = ["ssh", *target.options(), target.destination, command]
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 255, "", f"ssh timed out after {timeout:.0f} s")


def wait_ssh(target: SshTarget, timeout: float) -> None:
    """Until ``ssh true`` works (the key is accepted), or CliError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        proc = ssh(target, "true", timeout=20)
        if proc.returncode == 0:
            return
        last = (proc.stderr or proc.stdout).strip()[-300:]
        if time.monotonic() >= deadline:
            raise CliError(
                f"SSH to {target.destination} port {target.port} did not work within "
                f"{timeout:.0f} s: {last}"
            )
        time.sleep(2)


def fetch_proxy_key(target: SshTarget, key_file: str = KEY_FILE) -> str:
    """The proxy's API key from ``key_file`` on the host (never printed or logged by the caller);
    ``vastllm up`` passes the path the proxy role reported (its ``vastllm_proxy.key_file``)."""
    import shlex

    proc = ssh(target, f"cat {shlex.quote(key_file)}")
    key = proc.stdout.strip()
    if proc.returncode != 0 or not key:
        raise CliError(
            f"cannot read {key_file} on {target.destination}:{target.port} "
            f"(exit {proc.returncode}): {proc.stderr.strip()[-200:]}"
        )
    return key


PROBE = (
    f"PATH={MONITOR_PATH}:$PATH; "
    "vastllm-monitor report --json 2>/dev/null || echo null; "
    f"echo {SEPARATOR}; "
    "curl -s --max-time 3 http://127.0.0.1:11434/api/ps 2>/dev/null || echo null"
)


def parse_probe(stdout: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(monitor report, Ollama /api/ps) from PROBE's output (pure); None for a part that failed."""
    parts = stdout.split(SEPARATOR, 1)

    def load(text: str) -> dict[str, Any] | None:
        try:
            value = json.loads(text.strip() or "null")
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    report = load(parts[0])
    ps = load(parts[1]) if len(parts) > 1 else None
    return report, ps


def probe(target: SshTarget) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    proc = ssh(target, PROBE, timeout=30)
    if proc.returncode not in (0, 1):
        return None, None
    return parse_probe(proc.stdout)


def proxy_window(health: Mapping[str, Any] | None) -> int | None:
    """The window the proxy enforces (``/health`` ``context_window.served``): what Claude Code
    must plan for. Ollama's loaded context (``/api/ps``) can be larger when configured apart."""
    if not health:
        return None
    window = health.get("context_window")
    if not isinstance(window, Mapping):
        return None
    served = window.get("served")
    if isinstance(served, bool) or not isinstance(served, int) or served <= 0:
        return None
    return served


def served_context(ps: Mapping[str, Any] | None, model: str | None) -> int | None:
    """The context window Ollama serves the model with (``/api/ps``'s ``context_length``)."""
    if not ps:
        return None
    rows = [m for m in ps.get("models") or [] if isinstance(m, Mapping)]
    for row in rows:
        if model is None or row.get("name") == model or row.get("model") == model:
            try:
                value = int(row.get("context_length") or 0)
            except (TypeError, ValueError):
                continue
            if value > 0:
                return value
    return None
