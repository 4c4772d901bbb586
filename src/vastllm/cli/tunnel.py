"""The kept SSH tunnel to the proxy: pure decisions, the keeper process and its control.

``vastllm connect`` starts a keeper: ``python -m vastllm.cli.tunnel keep <state file>`` in a new
session (setsid: no controlling terminal, so closing the terminal does not end it; SIGHUP is
ignored as well). The keeper runs ``ssh -N -L ...`` with keep-alives and ExitOnForwardFailure, and
starts it again with backoff (1, 2, 4 ... 30 s) whenever it ends. Its state file (JSON, 0600,
``<state>/tunnels/<label>.json``) holds its pid, the ssh pid, the ports, the target and the status
(``starting``, ``up``, ``reconnecting``); ``disconnect`` sends it SIGTERM, it ends ssh and removes
the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vastllm.cli.config import CliError, write_private

KEEPER_MODULE = "vastllm.cli.tunnel"
STABLE_SECONDS = 60.0  # an ssh that ran this long resets the backoff


# ------------------------------------------------------------------ pure decisions


def backoff(attempt: int, base: float = 1.0, cap: float = 30.0) -> float:
    """Seconds before reconnect number ``attempt`` (0-based): 1, 2, 4, 8, 16, 30, 30 ..."""
    return float(min(cap, base * (2 ** max(0, min(attempt, 16)))))


def wanted_spec(
    label: str, target: Mapping[str, Any], local_port: int, remote_port: int, ollama_port: int
) -> dict[str, Any]:
    return {
        "label": label,
        "target": dict(target),
        "local_port": int(local_port),
        "remote_port": int(remote_port),
        "ollama_port": int(ollama_port or 0),
    }


def same_tunnel(state: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    keys = ("local_port", "remote_port", "ollama_port")
    if any(int(state.get(k) or 0) != int(wanted.get(k) or 0) for k in keys):
        return False
    a, b = state.get("target") or {}, wanted.get("target") or {}
    return all(a.get(k) == b.get(k) for k in ("host", "port", "user", "key_file"))


def connect_decision(
    state: Mapping[str, Any] | None, keeper_alive: bool, wanted: Mapping[str, Any]
) -> str:
    """``keep`` (the same tunnel is kept already: nothing to do), ``restart`` (a keeper runs with
    other ports or another address), ``start`` (none runs)."""
    if state is None or not keeper_alive:
        return "start"
    return "keep" if same_tunnel(state, wanted) else "restart"


def tunnel_state(state: Mapping[str, Any] | None, keeper_alive: bool, port_open: bool) -> str:
    """What ``status`` shows: ``up``, ``reconnecting``, ``starting``, ``down`` (no keeper) or
    ``stale`` (a state file whose keeper is gone)."""
    if state is None:
        return "down"
    if not keeper_alive:
        return "stale"
    if port_open and state.get("status") == "up":
        return "up"
    return str(state.get("status") or "starting")


def ssh_argv(spec: Mapping[str, Any]) -> list[str]:
    """The ssh command of the tunnel (pure)."""
    target = spec["target"]
    argv = [
        "ssh", "-N",
        "-L", f"127.0.0.1:{int(spec['local_port'])}:127.0.0.1:{int(spec['remote_port'])}",
    ]  # fmt: skip
    if int(spec.get("ollama_port") or 0):
        argv += ["-L", f"127.0.0.1:{int(spec['ollama_port'])}:127.0.0.1:11434"]
    argv += [
        "-p", str(int(target["port"])),
        "-i", str(target["key_file"]),
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=10",
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=3",
        "-o", "ExitOnForwardFailure=yes",
        "-o", "StrictHostKeyChecking=accept-new",
        "-o", f"UserKnownHostsFile={target['known_hosts']}",
        "-o", "LogLevel=ERROR",
        f"{target.get('user') or 'root'}@{target['host']}",
    ]  # fmt: skip
    return argv


# ------------------------------------------------------------------ I/O helpers


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(path: Path, state: Mapping[str, Any]) -> None:
    write_private(path, json.dumps(dict(state), indent=1, sort_keys=True) + "\n")


def pid_alive(pid: Any, marker: str = KEEPER_MODULE) -> bool:
    """Whether ``pid`` runs and (on Linux) is a tunnel keeper, not a recycled pid."""
    try:
        number = int(pid)
    except (TypeError, ValueError):
        return False
    if number <= 0:
        return False
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{number}/cmdline")
    if cmdline.exists():
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            return True
        if marker not in text:
            return False
        try:  # a zombie is not alive
            stat = Path(f"/proc/{number}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                return False
        except (OSError, IndexError):
            pass
    return True


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def keeper_alive(state: Mapping[str, Any] | None) -> bool:
    return state is not None and pid_alive(state.get("pid"))


def start_keeper(state_file: Path, log_file: Path, spec: Mapping[str, Any]) -> None:
    """Write the wanted tunnel to the state file and start a detached keeper for it."""
    state = {**dict(spec), "status": "starting", "pid": None, "ssh_pid": None, "reconnects": 0,
             "started_at": time.time(), "updated_at": time.time(), "last_error": ""}  # fmt: skip
    write_state(state_file, state)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", KEEPER_MODULE, "keep", str(state_file)],
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            close_fds=True,
            start_new_session=True,  # setsid: survives the terminal
            cwd="/",
        )
    finally:
        os.close(fd)
    # The keeper records its own pid in the state file (wait_up waits for it).
    del proc


def stop_keeper(state_file: Path, timeout: float = 10.0) -> bool:
    """End the keeper (and its ssh); True when one was running."""
    state = read_state(state_file)
    if state is None:
        return False
    running = keeper_alive(state)
    if running:
        pid = int(state["pid"])
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            running = False
        deadline = time.monotonic() + timeout
        while running and pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    ssh_pid = state.get("ssh_pid")
    if ssh_pid and pid_alive(ssh_pid, marker="ssh"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(ssh_pid), signal.SIGTERM)
    state_file.unlink(missing_ok=True)
    return running


def wait_up(state_file: Path, timeout: float) -> dict[str, Any]:
    """Until the keeper says ``up`` and the local port answers; CliError otherwise."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        state = read_state(state_file)
        if state is None:
            raise CliError("the tunnel keeper ended before the tunnel was up (see its log)")
        if not keeper_alive(state) and state.get("pid"):
            raise CliError("the tunnel keeper died (see its log)")
        if state.get("status") == "up" and port_open(int(state["local_port"])):
            return state
        time.sleep(0.2)
    error = (state or {}).get("last_error") or "no answer"
    raise CliError(f"the tunnel did not come up within {timeout:.0f} s: {error}")


# ------------------------------------------------------------------ the keeper process


class _Keeper:
    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file
        self.stopping = False
        self.proc: subprocess.Popen[bytes] | None = None

    def update(self, **changes: Any) -> dict[str, Any]:
        state = read_state(self.state_file) or {}
        state.update(changes, updated_at=time.time())
        write_state(self.state_file, state)
        return state

    def on_term(self, _signum: int, _frame: Any) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(0.1)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        spec = self.update(pid=os.getpid())
        argv = ssh_argv(spec)
        Path(spec["target"]["known_hosts"]).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        attempt = 0
        reconnects = int(spec.get("reconnects") or 0)
        while not self.stopping:
            started = time.monotonic()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
            self.update(ssh_pid=self.proc.pid, status="starting" if reconnects == 0 else
                        "reconnecting")  # fmt: skip
            up = False
            while not self.stopping and self.proc.poll() is None:
                if not up and port_open(int(spec["local_port"])):
                    up = True
                    self.update(status="up", up_since=time.time())
                self.sleep(0.25 if not up else 1.0)
            if self.stopping:
                break
            ran = time.monotonic() - started
            if ran >= STABLE_SECONDS:
                attempt = 0
            delay = backoff(attempt)
            attempt += 1
            reconnects += 1
            error = f"ssh exited with {self.proc.returncode} after {ran:.0f} s"
            print(f"{time.strftime('%F %T')} {error}; reconnecting in {delay:.0f} s", flush=True)
            self.update(status="reconnecting", ssh_pid=None, reconnects=reconnects,
                        last_error=error)  # fmt: skip
            self.sleep(delay)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        state = read_state(self.state_file)
        if state is not None and state.get("pid") == os.getpid():
            self.state_file.unlink(missing_ok=True)
        return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "keep":
        print("usage: python -m vastllm.cli.tunnel keep STATE_FILE", file=sys.stderr)
        return 2
    return _Keeper(Path(args[1])).run()


if __name__ == "__main__":
    raise SystemExit(main())
