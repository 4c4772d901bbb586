"""Helpers of the monitor integration tests (processes, stand-ins, fake /proc/1)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from vastllm_lab.testing_services import ProxyProcess, die_with_parent

REPO = Path(__file__).resolve().parents[3]
MODEL = "qwen3:0.6b"
PROXY_KEY = "monitor-test-proxy-key-0123"
SCOPED_KEY = "scoped-container-key-9876"
INSTANCE_ID = 31337


class MonitorProxy(ProxyProcess):
    """The proxy the monitor watches, with a way to send it one message."""

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
