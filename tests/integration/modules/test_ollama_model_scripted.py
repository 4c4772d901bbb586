"""ollama_model against a scripted loopback server: answers the lab double cannot give on demand.

A busy server (HTTP 503 on /api/pull), a stream cut before "success" (then resumed), a server
that keeps cutting, and a pull that reports success but leaves no model behind.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from ollama_module_run import run_direct

pytestmark = pytest.mark.timeout(60)

DIGEST = "ab" * 32


class FakeOllama:
    """Scripted `/api/pull` answers (popped in order; the last one repeats)."""

    def __init__(self) -> None:
        self.pull_answers: list[str] = []
        self.pulls = 0
        self.models: list[dict[str, Any]] = []
        self.lock = threading.Lock()


def make_handler(fake: FakeOllama) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # close-delimited streams: a cut is a plain EOF

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _json(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._json(200, {"models": fake.models})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length))
            with fake.lock:
                index = min(fake.pulls, len(fake.pull_answers) - 1)
                answer = fake.pull_answers[index]
                fake.pulls += 1
            if answer == "busy":
                self._json(503, {"error": "server busy, please try again"})
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()
            layer = {"status": "pulling ab", "digest": f"sha256:{DIGEST}", "total": 100}
            lines = [{"status": "pulling manifest"}, {**layer, "completed": 40}]
            if answer in ("success", "success-but-missing"):
                lines += [{**layer, "completed": 100}, {"status": "success"}]
            for line in lines:
                self.wfile.write(json.dumps(line).encode() + b"\n")
            if answer == "success":
                fake.models = [{"name": request["model"], "digest": DIGEST, "size": 100}]
            # "cut": the connection closes after 40 %, with neither success nor error

    return Handler


@pytest.fixture
def fake() -> Iterator[tuple[str, FakeOllama]]:
    state = FakeOllama()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    httpd.shutdown()
    httpd.server_close()


def run(tmp_path: Path, url: str, **extra: Any) -> dict[str, Any]:
    args = {
        "ollama_url": url,
        "name": "m:1b",
        "retries": 2,
        "retry_delay": 0.05,
        "progress_file": str(tmp_path / "progress.json"),
        **extra,
    }
    return run_direct("vastllm.stack.ollama_model", args, tmp_path / "args")


def test_busy_server_is_retried_then_pulled(fake, tmp_path: Path) -> None:
    url, state = fake
    state.pull_answers = ["busy", "busy", "success"]
    outcome = run(tmp_path, url)
    assert outcome["changed"] is True
    assert outcome["digest"] == DIGEST
    assert state.pulls == 3


def test_cut_stream_is_resumed_not_taken_for_success(fake, tmp_path: Path) -> None:
    url, state = fake
    state.pull_answers = ["cut", "success"]
    outcome = run(tmp_path, url)
    assert outcome["changed"] is True
    assert outcome["attempts"][0]["result"] == "pulled"
    assert state.pulls == 2


def test_stream_that_keeps_breaking_fails_after_retries(fake, tmp_path: Path) -> None:
    url, state = fake
    state.pull_answers = ["cut"]
    outcome = run(tmp_path, url)
    assert outcome["failed"] is True
    assert state.pulls == 3  # first try + 2 retries
    reason = outcome["attempts"][0]["reason"]
    assert reason.startswith(f"network/server failure after 3 attempt(s) at {url}")
    assert "the pull stream ended early (last status: pulling ab)" in reason
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["state"] == "failed"
    assert progress["finished"] is True
    assert progress["message"] == "failed: " + outcome["msg"]
    assert progress["completed"] == 40  # the last figures seen are kept


def test_persistent_busy_server_names_the_server_error(fake, tmp_path: Path) -> None:
    url, state = fake
    state.pull_answers = ["busy"]
    outcome = run(tmp_path, url, retries=1)
    assert outcome["failed"] is True
    assert "HTTP 503" in outcome["msg"]
    assert "server busy, please try again" in outcome["msg"]


def test_success_without_the_model_in_tags_is_a_failure(fake, tmp_path: Path) -> None:
    url, state = fake
    state.pull_answers = ["success-but-missing"]
    outcome = run(tmp_path, url)
    assert outcome["failed"] is True
    assert "pull reported success but the model is missing from /api/tags" in outcome["msg"]
