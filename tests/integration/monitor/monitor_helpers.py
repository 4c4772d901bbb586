"""Helpers of the monitor integration tests (processes, stand-ins, fake /proc/1)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
REDIS_SERVER = "/usr/bin/redis-server"
MODEL = "qwen3:0.6b"
PROXY_KEY = "monitor-test-proxy-key-0123"
SCOPED_KEY = "scoped-container-key-9876"
INSTANCE_ID = 31337


def die_with_parent() -> None:
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return response.status == 200
    except OSError:
        return False


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        wait_for(self._ping, 10, "redis-server")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)
        self.process = None


class ProxyProcess:
    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"proxy-{self.port}.log"
        full = {k: v for k, v in os.environ.items() if not k.startswith("VASTLLM_")}
        full.update({"VASTLLM_HOST": "127.0.0.1", "VASTLLM_PORT": str(self.port)})
        full.update(env)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vastllm.proxy"],
            env=full,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited early:\n{self.log_path.read_text()}")
            return http_ok(self.url + "/health/liveness")

        wait_for(up, 20, "the proxy")

    def message(self, text: str = "hello") -> int:
        import urllib.request

        body = json.dumps(
            {
                "model": "claude-sonnet-4-6",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": text}],
            }
        ).encode()
        request = urllib.request.Request(
            self.url + "/v1/messages",
            data=body,
            method="POST",
            headers={"content-type": "application/json", "x-api-key": PROXY_KEY},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


class RestartStandIn:
    """An executable that appends its arguments to a file and, when asked, clears the Ollama lab
    double's faults (what a real restart of a wedged Ollama achieves)."""

    def __init__(self, directory: Path, repair_url: str = "") -> None:
        self.calls_file = directory / "restart-calls.jsonl"
        self.path = directory / "restart-standin.py"
        self.path.write_text(
            f"#!{sys.executable}\n"
            "import json, sys, urllib.request\n"
            f"open({str(self.calls_file)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
            f"url = {repair_url!r}\n"
            "if url:\n"
            "    req = urllib.request.Request(url + '/lab/faults', method='DELETE')\n"
            "    urllib.request.urlopen(req, timeout=5).read()\n"
            "print('restarted', *sys.argv[1:])\n"
        )
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)

    def command(self, *args: str) -> str:
        return json.dumps([str(self.path), *args])

    def calls(self) -> list[list[str]]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines()]


def fake_proc1(directory: Path, env: dict[str, str], start: str = "4242") -> str:
    """A fake /proc/1 with ``environ`` (NUL-separated) and ``stat``; returns the environ path."""
    directory.mkdir(parents=True, exist_ok=True)
    environ = directory / "environ"
    environ.write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()))
    (directory / "stat").write_text(
        f"1 (init) S 0 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 {start} 1000 10\n"
    )
    return str(environ)


def run_monitor(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("VASTLLM_MONITOR_")}
    full["PYTHONPATH"] = str(REPO / "src") + os.pathsep + full.get("PYTHONPATH", "")
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "vastllm.monitor", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=die_with_parent,
    )


def read_records(env: dict[str, str]) -> list[dict]:
    path = Path(env["VASTLLM_MONITOR_STATE_DIR"]) / "monitor.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]
