"""The HTTP wire of the Ollama lab double (stdlib `http.server`, HTTP/1.1 keep-alive).

Request-line and header parsing, request bodies (Content-Length or chunked), JSON answers with a
Content-Length, NDJSON streams with `Transfer-Encoding: chunked` flushed line by line (as real
Ollama does), errors as `{"error": ...}`, one `[GIN]` log line per request. The endpoints are in
``handlers.py``; they are looked up in the handler class's ``routes``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from .generation import RequestError
from .state import LabOllama

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class HTTPError(Exception):
    """Answer with this status and `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def rfc3339(ts: float) -> str:
    moment = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


class LabServer(ThreadingHTTPServer):
    """The listening socket: one thread per connection, `handler` answers, `app` is the state."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], app: LabOllama, handler: type[WireHandler]
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        super().__init__(address, handler)


class NDJSONStream:
    """An NDJSON response: chunked for HTTP/1.1 clients, close-delimited for HTTP/1.0.

    Each line is flushed as it is produced. With `buffered` (a stream produced all at once, no
    chunk delay) the lines - still one HTTP chunk each - go out in one write at the end.
    """

    def __init__(self, handler: WireHandler, buffered: bool = False) -> None:
        self.handler = handler
        self.chunked = handler.request_version != "HTTP/1.0"
        self.chunks = 0
        self.buffered = buffered
        self._pending: list[bytes] = []
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
        head += f"Date: {handler.date_time_string()}\r\n"
        if self.chunked:
            head += "Transfer-Encoding: chunked\r\n"
        else:
            head += "Connection: close\r\n"
            handler.close_connection = True
        handler.status = 200
        self._write(head.encode("ascii") + b"\r\n")

    def _write(self, data: bytes) -> None:
        if self.buffered:
            self._pending.append(data)
        else:
            self.handler.wfile.write(data)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending = []
            self.handler.wfile.write(data)

    def send(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n"
        if self.chunked:
            line = b"%x\r\n%s\r\n" % (len(line), line)
        self._write(line)
        self.chunks += 1

    def end(self) -> None:
        if self.chunked:
            self._write(b"0\r\n\r\n")
        self.flush()

    def abort(self) -> None:
        """Cut the connection mid-stream, with no final chunk (the crash fault)."""
        self.flush()
        self.handler.close_connection = True
        with contextlib.suppress(OSError):
            self.handler.connection.shutdown(socket.SHUT_RDWR)


_MAX_LINE = 65536
_MAX_HEADERS = 100


class _Headers(dict[str, str]):  # subscripted builtins as a base: fine on 3.9
    """Request headers by lower-case name (enough of email.message.Message for this server)."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class WireHandler(BaseHTTPRequestHandler):
    """HTTP plumbing; a subclass provides the endpoints and `routes`, (method, path) -> endpoint."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: LabServer
    status = 0
    routes: ClassVar[Mapping[tuple[str, str], Callable[[Any, bytes], None]]] = {}
    _date_cache: tuple[int, str] = (0, "")

    # -- plumbing ------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        return  # one line per request is written by _dispatch

    def date_time_string(self, timestamp: float | None = None) -> str:
        now = int(time.time()) if timestamp is None else int(timestamp)
        cached = WireHandler._date_cache
        if cached[0] != now:
            cached = (now, super().date_time_string(now))
            WireHandler._date_cache = cached
        return cached[1]

    def parse_request(self) -> bool:
        """A lean request-line + header parser (the stdlib's email parser costs ~50 us)."""
        self.command = ""
        self.request_version = "HTTP/0.9"
        self.close_connection = True
        raw: bytes = getattr(self, "raw_requestline", b"")
        self.requestline = str(raw, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            self.request_version = "HTTP/1.0"
            self.send_error(400, f"Bad request line {self.requestline[:100]!r}")
            return False
        self.command, self.path, self.request_version = words
        headers = _Headers()
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                self.send_error(431, "Header line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            key, sep, value = str(line, "iso-8859-1").partition(":")
            if not sep:
                self.send_error(400, "Malformed header line")
                return False
            headers[key.strip().lower()] = value.strip()
        else:
            self.send_error(431, "Too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("connection", "").lower()
        if self.request_version == "HTTP/1.0":
            self.close_connection = "keep-alive" not in connection
        else:
            self.close_connection = "close" in connection
        if headers.get("expect", "").lower() == "100-continue":
            return self.handle_expect_100()
        return True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        size = int(length)
        if size < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(size)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Date: {self.date_time_string()}\r\n"
            f"Content-Length: {len(body)}\r\n"
        )
        if self.close_connection:
            head += "Connection: close\r\n"
        elif self.request_version == "HTTP/1.0":
            head += "Connection: keep-alive\r\n"
        self.status = status
        payload = head.encode("ascii") + b"\r\n"
        if self.command != "HEAD":
            payload += body
        self.wfile.write(payload)

    def send_json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8")

    def send_text(self, status: int, text: str) -> None:
        self._send(status, text.encode("utf-8"), "text/plain; charset=utf-8")

    def _dispatch(self, method: str) -> None:
        started = time.perf_counter()
        app = self.server.app
        path = self.path.split("?", 1)[0]
        self.status = 0
        if not path.startswith("/lab/"):
            app.count(path)
        try:
            try:
                body = self._read_body()
            except ValueError:
                self.close_connection = True
                raise HTTPError(400, "invalid request body framing") from None
            route = self.routes.get((method, path))
            if route is None:
                if method == "HEAD" and ("GET", path) in self.routes:
                    route = self.routes[("GET", path)]
                else:
                    self.send_text(404, "404 page not found")
                    return
            route(self, body)
        except HTTPError as exc:
            if not self.status:
                self.send_json(exc.status, {"error": exc.message})
        except RequestError as exc:
            if not self.status:
                self.send_json(400, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:
            app.log(f"lab: internal error on {method} {path}: {exc!r}\n{traceback.format_exc()}")
            if not self.status:
                self.send_json(500, {"error": f"lab double internal error: {exc}"})
            self.close_connection = True
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            stamp = time.strftime("%Y/%m/%d - %H:%M:%S")
            client = self.client_address[0] if self.client_address else "-"
            app.log(
                f"[GIN] {stamp} | {self.status or '---'} | {elapsed:10.3f}ms | {client:>15} | "
                f'{method:<8} "{path}"'
            )

    def read_json(self, body: bytes) -> dict[str, Any]:
        if not body.strip():
            raise RequestError("missing request body")
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise RequestError(f"invalid JSON in request body: {exc}") from None
        if not isinstance(data, dict):
            raise RequestError("request body must be a JSON object")
        return data
