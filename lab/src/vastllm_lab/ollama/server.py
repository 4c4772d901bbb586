"""The HTTP server of the Ollama lab double (stdlib `http.server`, HTTP/1.1 keep-alive).

JSON answers carry a Content-Length; NDJSON streams use `Transfer-Encoding: chunked` and are
flushed line by line, as real Ollama does. Shapes follow Ollama's docs/api.md.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, TextIO

from . import faults as faults_mod
from .catalog import Catalog, CatalogEntry, CatalogError, load_catalog
from .config import FOREVER, ConfigError, Settings, parse_duration
from .generation import RequestError, plan_reply
from .names import InvalidModelName, normalize
from .store import ModelRecord, ModelStore, build_manifest

BANNER = (
    "vastllm LAB DOUBLE of Ollama: an emulator for tests and the lab, NOT Ollama (no model runs)"
)
_FOREVER_SECONDS = 292 * 365.25 * 86400  # Go's maximum duration, about 292 years
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


def details(entry: CatalogEntry) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": entry.family,
        "families": list(entry.families),
        "parameter_size": entry.parameter_size,
        "quantization_level": entry.quantization,
    }


def os_error_text(action: str, exc: OSError, fallback_path: str) -> str:
    """Go-like `mkdir /path: permission denied` text of an OSError."""
    reason = (exc.strerror or str(exc)).lower()
    return f"{action} {exc.filename or fallback_path}: {reason}"


class Loaded:
    __slots__ = ("context_length", "expires_at", "loaded_at")

    def __init__(self, expires_at: float, context_length: int) -> None:
        self.expires_at = expires_at
        self.context_length = context_length
        self.loaded_at = time.time()


class LabOllama:
    """The state of the lab double: catalog, store, loaded models, faults, stats."""

    def __init__(
        self, settings: Settings, catalog: Catalog, store: ModelStore, log: TextIO
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self._log = log
        self._log_lock = threading.Lock()
        self._lock = threading.Lock()
        self._faults: dict[str, Any] = dict(settings.faults)
        self._stats: dict[str, int] = {}
        self._loaded: dict[str, Loaded] = {}

    # -- logging, stats, faults -------------------------------------------------------------
    def log(self, line: str) -> None:
        with self._log_lock:
            try:
                self._log.write(line + "\n")
                self._log.flush()
            except (OSError, ValueError):
                pass

    def info(self, message: str, **fields: str) -> None:
        stamp = datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")
        extra = "".join(f" {key}={json.dumps(value)}" for key, value in fields.items())
        self.log(f"time={stamp} level=INFO source=lab msg={json.dumps(message)}{extra}")

    def count(self, path: str) -> None:
        with self._lock:
            self._stats[path] = self._stats.get(path, 0) + 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            requests = dict(self._stats)
        return {"requests": requests, "total": sum(requests.values())}

    def reset_stats(self) -> None:
        with self._lock:
            self._stats.clear()

    def faults(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._faults)

    def fault(self, key: str) -> Any:
        return self._faults.get(key)

    def update_faults(self, update: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._faults = faults_mod.merge(self._faults, update)
            return dict(self._faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = {}

    # -- models ------------------------------------------------------------------------------
    def lookup(self, raw: Any) -> ModelRecord | None:
        try:
            return self.store.get(normalize(raw))
        except InvalidModelName:
            return None

    def _prune(self, now: float) -> None:
        expired = [n for n, m in self._loaded.items() if m.expires_at <= now]
        for name in expired:
            del self._loaded[name]

    def loaded(self) -> list[tuple[str, Loaded]]:
        with self._lock:
            self._prune(time.time())
            return sorted(self._loaded.items(), key=lambda item: -item[1].loaded_at)

    def load(self, record: ModelRecord, options: Any) -> int:
        """Load a model (if not loaded); return the load duration in ns."""
        now = time.time()
        with self._lock:
            self._prune(now)
            present = record.name in self._loaded
        if present:
            return 0
        started = time.perf_counter()
        delay = self.fault("load_delay")
        if delay:
            time.sleep(delay)
        num_ctx = options.get("num_ctx") if isinstance(options, dict) else None
        context = num_ctx if isinstance(num_ctx, int) and num_ctx > 0 else None
        context = min(context or self.settings.context_length, record.entry.context_length)
        default = self.settings.keep_alive
        seconds = _FOREVER_SECONDS if default == FOREVER else max(default, 1.0)
        with self._lock:  # the request's own keep_alive is applied by keep() when it is done
            if record.name not in self._loaded:
                self._loaded[record.name] = Loaded(now + seconds, context)
        return max(int((time.perf_counter() - started) * 1e9), 1000)

    def keep(self, record: ModelRecord, keep_alive: float) -> None:
        """Apply the request's keep-alive once the request is done (0 unloads)."""
        with self._lock:
            if keep_alive == 0:
                self._loaded.pop(record.name, None)
                return
            loaded = self._loaded.get(record.name)
            if loaded is not None:
                seconds = _FOREVER_SECONDS if keep_alive == FOREVER else keep_alive
                loaded.expires_at = time.time() + seconds

    def unload(self, name: str) -> None:
        with self._lock:
            self._loaded.pop(name, None)

    # -- pull ------------------------------------------------------------------------------
    def pull_events(self, name: str) -> Iterator[dict[str, Any]]:
        """The progress lines of a pull; an `{"error": ...}` line ends a failed pull."""
        yield {"status": "pulling manifest"}
        faults = self.faults()
        delay = float(faults.get("chunk_delay") or 0)
        entry = None if name in faults.get("unknown_model", []) else self.catalog.resolve(name)
        if entry is None:
            yield {"error": "pull model manifest: file does not exist"}
            return
        entry = entry.renamed(name)
        _manifest, blobs = build_manifest(entry)
        existing = self.store.get(name)
        fresh = existing is not None and existing.blobs == tuple(b.digest for b in blobs)
        layers = blobs[1:]  # the config blob is not reported, like in Ollama
        if not fresh:
            try:
                self.store.check_writable()
            except OSError as exc:
                yield {"error": os_error_text("mkdir", exc, self.store.blobs_dir)}
                return
        model = layers[0]
        steps = 1 if fresh else 10
        pause = 0.0 if fresh else model.size / self.settings.pull_rate / steps
        fail_at = 0
        if not fresh and (name in faults.get("pull_fail_after", []) or faults.get("disk_full")):
            fail_at = steps // 2 + 1
        status = f"pulling {model.digest[:12]}"
        digest = f"sha256:{model.digest}"
        if not fresh:
            yield {"status": status, "digest": digest, "total": model.size, "completed": 0}
        for step in range(1, steps + 1):
            if pause or delay:
                time.sleep(pause + delay)
            if step == fail_at:
                if name in faults.get("pull_fail_after", []):
                    yield {
                        "error": f'max retries exceeded: Get "https://{entry_host(name)}/v2/'
                        f'{entry_repo(name)}/blobs/{digest}": read: connection reset by peer'
                    }
                else:
                    path = os.path.join(self.store.blobs_dir, f"sha256-{model.digest}-partial")
                    yield {"error": f"write {path}: no space left on device"}
                return
            completed = model.size * step // steps
            yield {"status": status, "digest": digest, "total": model.size, "completed": completed}
        for blob in layers[1:]:
            if delay:
                time.sleep(delay)
            yield {
                "status": f"pulling {blob.digest[:12]}",
                "digest": f"sha256:{blob.digest}",
                "total": blob.size,
                "completed": blob.size,
            }
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        if not fresh:
            try:
                self.store.write(entry)
            except OSError as exc:
                yield {"error": os_error_text("write", exc, self.store.models_dir)}
                return
        yield {"status": "success"}


def entry_host(name: str) -> str:
    parts = name.split("/")
    return parts[0] if len(parts) == 3 else "registry.ollama.ai"


def entry_repo(name: str) -> str:
    path = name.rsplit(":", 1)[0]
    parts = path.split("/")
    if len(parts) == 1:
        return f"library/{path}"
    return "/".join(parts[-2:])


class LabServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: LabOllama) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        super().__init__(address, Handler)


class _Stream:
    """An NDJSON response: chunked for HTTP/1.1 clients, close-delimited for HTTP/1.0.

    Each line is flushed as it is produced. With `buffered` (a stream produced all at once, no
    chunk delay) the lines - still one HTTP chunk each - go out in one write at the end.
    """

    def __init__(self, handler: Handler, buffered: bool = False) -> None:
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


def _message_list(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError("messages must be a list of message objects")
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{index}] must be an object")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise RequestError(f"messages[{index}]: role is required")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise RequestError(
                f"json: cannot unmarshal {type(content).__name__} into Go struct field "
                f"Message.messages.content of type string"
            )
        images = message.get("images")
        if images is not None and not (
            isinstance(images, list) and all(isinstance(i, str) for i in images)
        ):
            raise RequestError(f"messages[{index}]: images must be a list of base64 strings")
    return value


def _tools(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RequestError("tools must be a list of tool objects")
    return value


def _think(value: Any) -> bool:
    if value is None or value is False:
        return False
    if value is True or value in ("low", "medium", "high"):
        return True
    raise RequestError(f"invalid think value {value!r} (true, false, low, medium or high)")


_MAX_LINE = 65536
_MAX_HEADERS = 100


class _Headers(dict[str, str]):  # subscripted builtins as a base: fine on 3.9
    """Request headers by lower-case name (enough of email.message.Message for this server)."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: LabServer
    status = 0
    _date_cache: tuple[int, str] = (0, "")

    # -- plumbing ------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        return  # one line per request is written by _dispatch

    def date_time_string(self, timestamp: float | None = None) -> str:
        now = int(time.time()) if timestamp is None else int(timestamp)
        cached = Handler._date_cache
        if cached[0] != now:
            cached = (now, super().date_time_string(now))
            Handler._date_cache = cached
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
            route = ROUTES.get((method, path))
            if route is None:
                if method == "HEAD" and ("GET", path) in ROUTES:
                    route = ROUTES[("GET", path)]
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

    # -- plain endpoints ------------------------------------------------------------------
    def root(self, body: bytes) -> None:
        self.send_text(200, "Ollama is running")

    def version(self, body: bytes) -> None:
        self.send_json(200, {"version": self.server.app.settings.version})

    def tags(self, body: bytes) -> None:
        models = [
            {
                "name": r.name,
                "model": r.name,
                "modified_at": rfc3339(r.modified_at),
                "size": r.entry.size,
                "digest": r.digest,
                "details": details(r.entry),
            }
            for r in self.server.app.store.list()
        ]
        self.send_json(200, {"models": models})

    def ps(self, body: bytes) -> None:
        app = self.server.app
        models = []
        for name, loaded in app.loaded():
            record = app.store.get(name)
            if record is None:
                continue
            models.append(
                {
                    "name": name,
                    "model": name,
                    "size": record.entry.size,
                    "digest": record.digest,
                    "details": details(record.entry),
                    "expires_at": rfc3339(loaded.expires_at),
                    "size_vram": record.entry.size,
                    "context_length": loaded.context_length,
                }
            )
        self.send_json(200, {"models": models})

    def _model_field(self, req: dict[str, Any]) -> Any:
        raw = req.get("model") or req.get("name")
        if not raw:
            raise RequestError("model is required")
        if not isinstance(raw, str):
            raise RequestError("model must be a string")
        return raw

    def show(self, body: bytes) -> None:
        req = self.read_json(body)
        raw = self._model_field(req)
        record = self.server.app.lookup(raw)
        if record is None:
            raise HTTPError(404, f"model '{raw}' not found")
        entry = record.entry
        family = entry.family
        params = "\n".join(f"PARAMETER {line}" for line in entry.parameters.splitlines())
        modelfile = (
            '# Modelfile generated by "ollama show" (vastllm lab double: no weights)\n'
            f"FROM {record.name}\n"
            f'TEMPLATE """{entry.template}"""\n{params}\n'
        )
        self.send_json(
            200,
            {
                "license": entry.license,
                "modelfile": modelfile,
                "parameters": entry.parameters,
                "template": entry.template,
                "details": details(entry),
                "model_info": {
                    "general.architecture": family,
                    "general.basename": record.name.split(":")[0].split("/")[-1],
                    "general.file_type": 15,
                    "general.parameter_count": entry.parameter_count,
                    "general.quantization_version": 2,
                    f"{family}.context_length": entry.context_length,
                    f"{family}.embedding_length": entry.embedding_length,
                },
                "capabilities": list(entry.capabilities),
                "modified_at": rfc3339(record.modified_at),
            },
        )

    def delete(self, body: bytes) -> None:
        req = self.read_json(body)
        raw = self._model_field(req)
        app = self.server.app
        try:
            name = normalize(raw)
        except InvalidModelName:
            raise HTTPError(404, f"model '{raw}' not found") from None
        try:
            removed = app.store.delete(name)
        except OSError as exc:
            raise HTTPError(500, os_error_text("remove", exc, app.store.models_dir)) from None
        if not removed:
            raise HTTPError(404, f"model '{raw}' not found")
        app.unload(name)
        self._send(200, b"", "application/json; charset=utf-8")

    def pull(self, body: bytes) -> None:
        req = self.read_json(body)
        raw = self._model_field(req)
        stream = req.get("stream", True)
        if not isinstance(stream, bool):
            raise RequestError("stream must be true or false")
        try:
            name = normalize(raw)
        except InvalidModelName:
            raise HTTPError(400, "invalid model name") from None
        events = self.server.app.pull_events(name)
        if not stream:
            last: dict[str, Any] = {}
            for event in events:
                last = event
                if "error" in event:
                    raise HTTPError(500, event["error"])
            self.send_json(200, last)
            return
        out = _Stream(self)
        for event in events:
            out.send(event)
        out.end()

    # -- generation ------------------------------------------------------------------------
    def _prepare(self, req: dict[str, Any]) -> tuple[ModelRecord, float, bool]:
        app = self.server.app
        if app.fault("busy"):
            raise HTTPError(
                503, "server busy, please try again.  maximum pending requests exceeded"
            )
        raw = req.get("model")
        if not raw:
            raise RequestError("model is required")
        if not isinstance(raw, str):
            raise RequestError("model must be a string")
        record = app.lookup(raw)
        if record is None:
            raise HTTPError(404, f'model "{raw}" not found, try pulling it first')
        if _think(req.get("think")) and not record.entry.has("thinking"):
            raise RequestError(f'"{raw}" does not support thinking')
        if req.get("tools") and not record.entry.has("tools"):
            raise RequestError(f'"{raw}" does not support tools')
        keep_alive = app.settings.keep_alive
        if req.get("keep_alive") is not None:
            try:
                keep_alive = parse_duration(req["keep_alive"])
            except ConfigError as exc:
                raise RequestError(str(exc)) from None
        stream = req.get("stream", True)
        if not isinstance(stream, bool):
            raise RequestError("stream must be true or false")
        return record, keep_alive, stream

    def _load_only(self, record: ModelRecord, keep_alive: float, req: dict[str, Any]) -> bool:
        """Empty prompt/messages: load (or with keep_alive 0, unload) the model."""
        app = self.server.app
        if keep_alive == 0:
            app.unload(record.name)
            return False
        app.load(record, req.get("options"))
        app.keep(record, keep_alive)
        return True

    def chat(self, body: bytes) -> None:
        req = self.read_json(body)
        app = self.server.app
        record, keep_alive, stream = self._prepare(req)
        error = app.fault("chat_error")
        if error:
            raise HTTPError(500, error)
        messages = _message_list(req.get("messages"))
        tools = _tools(req.get("tools"))
        think = _think(req.get("think"))
        reply = plan_reply(
            record.name, messages, tools, req.get("options"), think, req.get("format")
        )
        if not messages:
            loaded = self._load_only(record, keep_alive, req)
            self.send_json(
                200,
                {
                    "model": record.name,
                    "created_at": rfc3339(time.time()),
                    "message": {"role": "assistant", "content": ""},
                    "done_reason": "load" if loaded else "unload",
                    "done": True,
                },
            )
            return

        def chunk(thinking: str, content: str) -> dict[str, Any]:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            return {
                "model": record.name,
                "created_at": rfc3339(time.time()),
                "message": message,
                "done": False,
            }

        def tool_chunk() -> dict[str, Any]:
            item = chunk("", "")
            item["message"]["tool_calls"] = reply.tool_calls
            return item

        def whole() -> dict[str, Any]:
            item = chunk(reply.thinking_text, reply.content_text)
            if reply.tool_calls:
                item["message"]["tool_calls"] = reply.tool_calls
            return item

        self._generate(record, keep_alive, stream, reply, req, chunk, tool_chunk, whole, "message")

    def generate(self, body: bytes) -> None:
        req = self.read_json(body)
        app = self.server.app
        record, keep_alive, stream = self._prepare(req)
        prompt = req.get("prompt") or ""
        if not isinstance(prompt, str):
            raise RequestError("prompt must be a string")
        images = req.get("images")
        if not prompt and not images:
            loaded = self._load_only(record, keep_alive, req)
            self.send_json(
                200,
                {
                    "model": record.name,
                    "created_at": rfc3339(time.time()),
                    "response": "",
                    "done": True,
                    "done_reason": "load" if loaded else "unload",
                },
            )
            return
        error = app.fault("chat_error")
        if error:
            raise HTTPError(500, error)
        messages: list[dict[str, Any]] = []
        system = req.get("system")
        if isinstance(system, str) and system:
            messages.append({"role": "system", "content": system})
        user: dict[str, Any] = {"role": "user", "content": prompt}
        if images:
            user["images"] = images
        messages.append(_message_list([user])[0])
        reply = plan_reply(
            record.name,
            messages,
            [],
            req.get("options"),
            _think(req.get("think")),
            req.get("format"),
        )

        def chunk(thinking: str, content: str) -> dict[str, Any]:
            item: dict[str, Any] = {
                "model": record.name,
                "created_at": rfc3339(time.time()),
                "response": content,
                "done": False,
            }
            if thinking:
                item["thinking"] = thinking
            return item

        def whole() -> dict[str, Any]:
            return chunk(reply.thinking_text, reply.content_text)

        self._generate(record, keep_alive, stream, reply, req, chunk, whole, whole, "response")

    def _generate(
        self,
        record: ModelRecord,
        keep_alive: float,
        stream: bool,
        reply: Any,
        req: dict[str, Any],
        chunk: Callable[[str, str], dict[str, Any]],
        tool_chunk: Callable[[], dict[str, Any]],
        whole: Callable[[], dict[str, Any]],
        kind: str,
    ) -> None:
        app = self.server.app
        started = time.perf_counter()
        load_ns = app.load(record, req.get("options"))
        prompt_ns = reply.prompt_eval_count * 20_000
        eval_started = time.perf_counter()
        delay = float(app.fault("chunk_delay") or 0)
        crash_after = app.fault("crash_after_chunks")

        def final(item: dict[str, Any]) -> dict[str, Any]:
            eval_ns = max(int((time.perf_counter() - eval_started) * 1e9), reply.eval_count * 1000)
            total_ns = max(
                int((time.perf_counter() - started) * 1e9), load_ns + prompt_ns + eval_ns
            )
            item.update(
                done=True,
                done_reason=reply.done_reason,
                total_duration=total_ns,
                load_duration=load_ns,
                prompt_eval_count=reply.prompt_eval_count,
                prompt_eval_duration=prompt_ns,
                eval_count=reply.eval_count,
                eval_duration=eval_ns,
            )
            return item

        if not stream:
            if crash_after is not None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if delay:
                time.sleep(delay * (len(reply.thinking) + len(reply.content)))
            app.keep(record, keep_alive)
            self.send_json(200, final(whole()))
            return
        out = _Stream(self, buffered=not delay)
        pieces: list[tuple[str, str]] = [(t, "") for t in reply.thinking]
        pieces += [("", c) for c in reply.content]
        sends: list[Callable[[], dict[str, Any]]] = [
            functools.partial(chunk, thinking, content) for thinking, content in pieces
        ]
        if reply.tool_calls:
            sends.append(tool_chunk)
        for make in sends:
            if crash_after is not None and out.chunks >= crash_after:
                out.abort()
                return
            if delay:
                time.sleep(delay)
            out.send(make())
        if crash_after is not None and out.chunks >= crash_after:
            out.abort()
            return
        app.keep(record, keep_alive)
        last = chunk("", "")
        if kind == "message":
            last["message"] = {"role": "assistant", "content": ""}
        out.send(final(last))
        out.end()

    # -- lab control --------------------------------------------------------------------------
    def get_faults(self, body: bytes) -> None:
        self.send_json(200, self.server.app.faults())

    def post_faults(self, body: bytes) -> None:
        app = self.server.app
        try:
            update = faults_mod.validate(json.loads(body or b"{}"))
        except ValueError as exc:  # FaultError and JSON errors
            raise RequestError(str(exc)) from None
        current = app.update_faults(update)
        self.send_json(200, current)
        if current.get("crash"):
            app.info("crash fault set: the lab double exits now with code 1")
            self.wfile.flush()
            os._exit(1)

    def delete_faults(self, body: bytes) -> None:
        self.server.app.clear_faults()
        self.send_json(200, {})

    def get_stats(self, body: bytes) -> None:
        self.send_json(200, self.server.app.stats())

    def delete_stats(self, body: bytes) -> None:
        self.server.app.reset_stats()
        self.send_json(200, self.server.app.stats())


ROUTES: dict[tuple[str, str], Callable[[Handler, bytes], None]] = {
    ("GET", "/"): Handler.root,
    ("GET", "/api/version"): Handler.version,
    ("GET", "/api/tags"): Handler.tags,
    ("GET", "/api/ps"): Handler.ps,
    ("POST", "/api/show"): Handler.show,
    ("POST", "/api/pull"): Handler.pull,
    ("DELETE", "/api/delete"): Handler.delete,
    ("POST", "/api/chat"): Handler.chat,
    ("POST", "/api/generate"): Handler.generate,
    ("GET", "/lab/faults"): Handler.get_faults,
    ("POST", "/lab/faults"): Handler.post_faults,
    ("PUT", "/lab/faults"): Handler.post_faults,
    ("DELETE", "/lab/faults"): Handler.delete_faults,
    ("GET", "/lab/stats"): Handler.get_stats,
    ("DELETE", "/lab/stats"): Handler.delete_stats,
}


def build_app(settings: Settings, log: TextIO) -> LabOllama:
    """Catalog + store (+ preloads) for the settings; raises CatalogError/ConfigError."""
    catalog = load_catalog(settings.catalog_path)
    store = ModelStore(settings.models_dir)
    app = LabOllama(settings, catalog, store, log)
    for warning in store.load():
        app.info(warning)
    for raw in settings.preload:
        entry = catalog.resolve(raw)
        if entry is None:
            raise ConfigError(f"VASTLLM_LAB_PRELOAD: {raw!r} is not in the lab catalog")
        name = normalize(raw)
        if store.get(name) is None:  # present on disk already: keep that copy (and digest)
            try:
                store.write(entry.renamed(name))
            except OSError as exc:
                app.info(f"preload of {name} kept in memory only: {exc}")
                store.add_memory(entry.renamed(name))
    return app


def _watch_parent(app: LabOllama, server: LabServer) -> None:
    """Stop when the process that started us is gone (a test run killed with SIGKILL)."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    app.info(f"parent process {parent} exited: stopping the lab double")
    server.shutdown()


def serve(settings: Settings, log: TextIO = sys.stderr) -> int:
    """Run the lab double until SIGTERM/SIGINT; return the exit code."""
    log.write(f"{BANNER} -- version {settings.version}\n")
    log.flush()
    try:
        app = build_app(settings, log)
    except (CatalogError, ConfigError) as exc:
        log.write(f"Error: {exc}\n")
        return 1
    app.info("server config", env=settings.server_config())
    if settings.faults.get("crash"):
        app.info("crash fault set: the lab double exits now with code 1")
        return 1
    try:
        server = LabServer((settings.host, settings.port), app)
    except OSError as exc:
        log.write(f"Error: listen tcp {settings.host}:{settings.port}: bind: {exc.strerror}\n")
        return 1
    address = server.server_address
    host = address[0].decode() if isinstance(address[0], bytes) else str(address[0])
    port = address[1]
    shown = f"[{host}]" if ":" in host else host
    present = ", ".join(r.name for r in app.store.list()) or "none"
    app.info(f"models present: {present}")
    app.info(f"Listening on {shown}:{port} (version {settings.version})")

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    if settings.exit_with_parent:
        threading.Thread(target=_watch_parent, args=(app, server), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    app.info("lab double stopped")
    return 0
