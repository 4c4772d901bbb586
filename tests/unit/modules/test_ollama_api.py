"""The stdlib Ollama client (module_utils/ollama_api.py) against a scripted loopback server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ansible_collections.vastllm.stack.plugins.module_utils.ollama_api import (
    OllamaClient,
    OllamaError,
    OllamaUnreachable,
)

from vastllm_lab.testing import free_port

Reply = Callable[[BaseHTTPRequestHandler], None]


class Script:
    """Replies handed out in order (the last one repeats); requests are recorded."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[tuple[str, str, bytes]] = []


def json_reply(status: int, body: object) -> Reply:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return reply


def raw_reply(status: int, data: bytes) -> Reply:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return reply


def stream_reply(lines: list[bytes], pause: float = 0.0) -> Reply:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/x-ndjson")
        handler.end_headers()
        for line in lines:
            handler.wfile.write(line)
            handler.wfile.flush()
            if pause:
                time.sleep(pause)

    return reply


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def handle_any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            script.requests.append((self.command, self.path, body))
            index = min(len(script.requests), len(script.replies)) - 1
            script.replies[index](self)

        do_GET = do_POST = do_DELETE = handle_any

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


def client(url: str, sleeps: list[float] | None = None, **kwargs: object) -> OllamaClient:
    record = sleeps if sleeps is not None else []
    return OllamaClient(url, sleep=record.append, **kwargs)  # type: ignore[arg-type]


def test_get_json_returns_the_decoded_body(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [json_reply(200, {"models": [{"name": "qwen3:0.6b"}]})]
    assert client(url).get_json("/api/tags") == {"models": [{"name": "qwen3:0.6b"}]}
    assert script.requests[0][:2] == ("GET", "/api/tags")


def test_post_and_delete_send_json_bodies(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [json_reply(200, {"ok": 1}), raw_reply(200, b"")]
    assert client(url + "/").post_json("api/show", {"model": "m"}) == {"ok": 1}
    assert client(url).delete_json("/api/delete", {"model": "m"}) is None
    assert [(m, p, json.loads(b)) for m, p, b in script.requests] == [
        ("POST", "/api/show", {"model": "m"}),
        ("DELETE", "/api/delete", {"model": "m"}),
    ]


def test_http_4xx_raises_ollama_error_with_server_message_without_retry(
    server: tuple[str, Script],
) -> None:
    url, script = server
    script.replies = [json_reply(404, {"error": "model 'nope' not found"})]
    sleeps: list[float] = []
    with pytest.raises(OllamaError) as info:
        client(url, sleeps).post_json("/api/show", {"model": "nope"})
    assert info.value.status == 404
    assert info.value.message == "model 'nope' not found"
    assert "HTTP 404" in str(info.value)
    assert len(script.requests) == 1
    assert sleeps == []


def test_http_5xx_is_retried_with_backoff_then_succeeds(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [
        json_reply(503, {"error": "server busy"}),
        raw_reply(500, b"oops"),
        json_reply(200, {"version": "0.9.0"}),
    ]
    sleeps: list[float] = []
    result = client(url, sleeps, retries=3, retry_delay=0.5).get_json("/api/version")
    assert result == {"version": "0.9.0"}
    assert sleeps == [0.5, 1.0]
    assert len(script.requests) == 3


def test_http_5xx_exhausting_retries_raises_the_last_error(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [json_reply(503, {"error": "server busy"})]
    sleeps: list[float] = []
    with pytest.raises(OllamaError) as info:
        client(url, sleeps, retries=2, retry_delay=1).get_json("/api/tags")
    assert info.value.status == 503
    assert info.value.message == "server busy"
    assert len(script.requests) == 3
    assert sleeps == [1, 2]


def test_connection_refused_raises_unreachable_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    sleeps: list[float] = []
    with pytest.raises(OllamaUnreachable) as info:
        client(url, sleeps, retries=2, retry_delay=0.25).get_json("/api/tags")
    assert info.value.url == url
    assert url in str(info.value)
    assert "refused" in str(info.value).lower()
    assert sleeps == [0.25, 0.5]


def test_non_json_body_is_a_clear_error(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [raw_reply(200, b"<html>proxy login</html>")]
    with pytest.raises(OllamaError) as info:
        client(url).get_json("/api/tags")
    assert info.value.status is None
    assert "not JSON" in str(info.value)


def test_stream_ndjson_yields_every_line_including_error_lines(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [
        stream_reply(
            [
                b'{"status":"pulling manifest"}\n',
                b"\n",
                b'{"status":"pulling a","digest":"sha256:a","total":10,"completed":5}\n',
                b'{"error":"pull model manifest: file does not exist"}\n',
            ]
        )
    ]
    lines = list(client(url).stream_ndjson("/api/pull", {"model": "m"}))
    assert lines == [
        {"status": "pulling manifest"},
        {"status": "pulling a", "digest": "sha256:a", "total": 10, "completed": 5},
        {"error": "pull model manifest: file does not exist"},
    ]
    assert json.loads(script.requests[0][2]) == {"model": "m"}


def test_stream_ndjson_rejects_garbage_lines(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [stream_reply([b'{"status":"ok"}\n', b"not json\n"])]
    stream = client(url).stream_ndjson("/api/pull", {"model": "m"})
    assert next(stream) == {"status": "ok"}
    with pytest.raises(OllamaError, match="stream line is not JSON"):
        next(stream)


def test_stalled_stream_times_out_per_read(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [stream_reply([b'{"status":"pulling"}\n', b'{"status":"late"}\n'], pause=2)]
    stream = client(url).stream_ndjson("/api/pull", {"model": "m"}, read_timeout=0.3)
    assert next(stream) == {"status": "pulling"}
    started = time.monotonic()
    with pytest.raises(OllamaUnreachable, match="stream broke: timed out"):
        next(stream)
    assert time.monotonic() - started < 1.5


def test_stream_http_error_is_raised_before_any_line(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [json_reply(404, {"error": "model not found"})]
    with pytest.raises(OllamaError) as info:
        list(client(url).stream_ndjson("/api/pull", {"model": "m"}))
    assert info.value.status == 404


def test_invalid_base_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be an http"):
        OllamaClient("127.0.0.1:11434")


def test_backoff_doubles_and_caps_at_30_seconds(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies = [json_reply(503, {"error": "server busy"})]
    sleeps: list[float] = []
    with pytest.raises(OllamaError):
        client(url, sleeps, retries=5, retry_delay=4.0).get_json("/api/tags")
    assert sleeps == [4.0, 8.0, 16.0, 30.0, 30.0]
    assert len(script.requests) == 6


def test_retry_after_of_a_busy_server_is_honoured(server: tuple[str, Script]) -> None:
    url, script = server

    def busy(handler: BaseHTTPRequestHandler) -> None:
        data = b'{"error": "server busy, please try again"}'
        handler.send_response(503)
        handler.send_header("Retry-After", "7")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    script.replies = [busy, json_reply(200, {"version": "0.9.0"})]
    sleeps: list[float] = []
    assert client(url, sleeps, retries=3, retry_delay=0.5).get_json("/api/version") == {
        "version": "0.9.0"
    }
    assert sleeps == [7.0]


def test_proxy_from_the_environment_is_used(
    server: tuple[str, Script], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like every Ansible module, the client goes through http_proxy when the user sets it."""
    proxy, script = server
    script.replies = [json_reply(200, {"models": []})]
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", proxy)
    assert client("http://ollama.invalid:11434").get_json("/api/tags") == {"models": []}
    assert script.requests[0][1] == "http://ollama.invalid:11434/api/tags"


def test_stream_without_retries_fails_at_once_when_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    sleeps: list[float] = []
    with pytest.raises(OllamaUnreachable):
        list(client(url, sleeps, retries=5).stream_ndjson("/api/pull", {"model": "m"}, retries=0))
    assert sleeps == []  # the caller (the module's pull loop) does the retrying
