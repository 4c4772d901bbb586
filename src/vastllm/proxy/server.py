"""The listening port: uvicorn with bounded connections, and a guard in front of the ASGI app.

The proxy is meant for a public port, so nothing a client does at the HTTP level may hold
resources without bound or get an answer that is not Anthropic-shaped JSON. Two layers:

``GuardedProtocol`` (uvicorn's httptools protocol, extended), per connection:

- **connection cap**: beyond ``max_connections`` open connections a new one is answered
  ``503 overloaded_error`` (JSON, ``connection: close``) at once and closed; a warning with the
  count of refusals is logged at most every 10 s. ``max_connections`` is also kept below the
  process's file limit (``raise_file_limit``), so accepting never runs out of descriptors.
- **header timeout**: a request's head (request line and headers) must be complete within
  ``header_timeout`` s of the connection's start or of its first byte after the previous
  request. A connection that sent nothing is closed silently; one that sent part of a head gets
  ``408``.
- **idle keep-alive timeout**: uvicorn's ``timeout_keep_alive`` (``keepalive_timeout``).
- **body timeout**: a body that stalls for ``body_timeout`` s between two reads → ``408``.
- **head size cap**: more than ``max_header_bytes`` of request line and headers → ``431``; the
  head is never buffered beyond that (plus one socket read).
- **malformed HTTP** → ``400 invalid_request_error`` (JSON) instead of uvicorn's plain text;
  a WebSocket upgrade → ``400`` (the proxy speaks no WebSocket); another upgrade (``h2c``) is
  ignored, as HTTP allows: the request is answered over HTTP/1.1 and the connection closed.

``GuardApp`` (ASGI middleware around the app), per request:

- **body cap per route**: ``/v1/messages`` and ``/v1/messages/count_tokens`` accept
  ``max_request_bytes``, every other route ``max_other_body_bytes``; more → ``413
  request_too_large`` (``connection: close``), decided from ``Content-Length`` when there is one,
  before a byte of the body is read.
- **key before body**: when a key is configured, a request to a messages route that does not
  carry it (same rule as ``auth.py``: ``x-api-key`` or ``Authorization: Bearer``, trimmed,
  compared in constant time) goes to the app *without its body being read*: the route answers
  ``401`` before it reads, and uvicorn drops the rest of the body as it arrives. Should a route
  read such a body after all, it gets at most ``max_other_body_bytes``. So a client without the
  key cannot make the proxy buffer up to ``max_request_bytes`` per connection.
- ``HEAD`` is served as ``GET`` without the body (``HEAD /health`` → 200).
- an exception that escapes the app, or an app that returns without answering → ``500
  api_error`` JSON (never uvicorn's plain-text 500).
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import gc
import logging
import math
import resource
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from secrets import token_hex
from typing import Any, ClassVar

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from vastllm.proxy.asgi import DISCONNECT_EXTENSION
from vastllm.proxy.auth import KeyCheck
from vastllm.proxy.config import Settings
from vastllm.proxy.errors import error_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger("vastllm.proxy.server")
_access = logging.getLogger("vastllm.proxy.access")

LARGE_BODY_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
REFUSAL_LOG_INTERVAL = 10.0
LINGER_SECONDS = 1.0  # how long a refused connection is drained before it is closed
FD_RESERVE_MAX = 1024  # descriptors kept for Ollama, Redis, logs beyond the client connections


def error_response(
    status: int, error_type: str, message: str, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> bytes:
    """A complete HTTP/1.1 answer with an Anthropic-shaped error body; the connection closes."""
    body = error_json(error_type, message)
    head = [
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"request-id: req_" + token_hex(12).encode() + b"\r\n",
        *(name + b": " + value + b"\r\n" for name, value in extra),
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


class _Refusals:
    """Counts connections refused at the cap; logs a warning at most every 10 s."""

    def __init__(self) -> None:
        self.total = 0
        self._unlogged = 0
        self._last_log = float("-inf")

    def note(self, open_connections: int, cap: int) -> None:
        self.total += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last_log >= REFUSAL_LOG_INTERVAL:
            _log.warning(
                "refused %d connection(s) with 503: %d open, max_connections=%d "
                "(VASTLLM_MAX_CONNECTIONS)",
                self._unlogged,
                open_connections,
                cap,
            )
            self._unlogged = 0
            self._last_log = now


refusals = _Refusals()


def _nothing() -> None:
    """Unregisters a disconnect callback that was run at once."""


class _HeadWithBody:
    """The transport as one request's response cycle sees it: its first write (uvicorn writes
    the status line and headers on their own) is held until the next one, and both go out
    in one write — one system call and one TCP segment per answer instead of two. Whatever
    comes first flushes it: the next write, a close, or the event loop's next turn (a
    ``HEAD`` answer has no body write). Everything else is the transport's.

    Measured (issue 8; docs/proxy.md, "Performance"): with the final write of a streamed
    answer also merged (messages.py), socket writes per miss 5 -> 4 non-streamed and 6 -> 4
    streamed; a 500-byte loopback send costs 3.4 µs of CPU in a tight loop on the 2-core VM,
    more when it wakes the reader, and the reader pays a wake-up for each."""

    __slots__ = ("_fresh", "_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._fresh = True

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif self._fresh:
            self._fresh = False
            self._head = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write a held head now (before anyone else writes to the connection)."""
        head, self._head = self._head, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; ``protocol_class`` sets them."""

    header_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 30.0
    max_header_bytes: ClassVar[int] = 64 * 1024
    max_connections: ClassVar[int] = 10000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._reading_head = True
        self._raw_head_bytes = 0  # bytes received while a head is incomplete
        self._head_bytes = 0  # size of the parsed request line and headers
        self._finished = False  # answered by the guard: ignore whatever else arrives
        self._in_body = False  # between a head and the end of its body
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen_at = 0.0
        self._on_lost: list[Callable[[], None]] = []  # the apps' disconnect callbacks
        self._lost = False
        # the scope's ASGI extensions, the same for every request of the connection
        self._extensions: dict[str, Any] = {DISCONNECT_EXTENSION: self._watch_disconnect}

    # ------------------------------------------------------------------ connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.connections.discard(self)
            refusals.note(len(self.connections), self.max_connections)
            self._refuse(503, "overloaded_error", "too many open connections, retry later")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)
        self._lost = True
        callbacks, self._on_lost = self._on_lost, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                _log.exception("disconnect callback failed")

    def _flush_held_head(self) -> None:
        """A response head the current cycle holds goes out before what the protocol itself
        writes or closes (an answer to ``HEAD`` has no body write to carry it)."""
        cycle = self.cycle
        if cycle is not None and isinstance(cycle.transport, _HeadWithBody):
            cycle.transport.flush()

    def shutdown(self) -> None:
        self._flush_held_head()
        super().shutdown()

    def _watch_disconnect(self, callback: Callable[[], None]) -> Callable[[], None]:
        """The ASGI extension ``vastllm.disconnect`` (``asgi.watch_disconnect``): call
        ``callback`` when the connection is lost; returns the function that unregisters it."""
        if self._lost:  # gone already (while the body was read, or the cache looked up)
            callback()
            return _nothing
        callbacks = self._on_lost
        callbacks.append(callback)

        def cancel() -> None:
            if callback in callbacks:
                callbacks.remove(callback)

        return cancel

    def data_received(self, data: bytes) -> None:
        if self._finished:
            return
        self._unset_keepalive_if_required()
        # The head timer starts with the first bytes of a head, but is armed only when the head
        # is still incomplete after this read: a head that comes in one read (nearly all) costs
        # no timer (one arm and cancel of a loop timer is ~3 µs).
        arm = False
        if self._reading_head:
            self._raw_head_bytes += len(data)
            arm = self._head_timer is None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Only a non-WebSocket upgrade gets here (a WebSocket one is refused with its
            # head): it was served as a plain request; the connection ends with it.
            if self.cycle is not None:
                self.cycle.keep_alive = False
            return
        except httptools.HttpParserError:
            if not self._finished:
                self._request_error(400, "invalid_request_error", "malformed HTTP request")
            return
        if self._finished:
            return
        if arm and self._reading_head and self._raw_head_bytes and self._head_timer is None:
            self._arm_head_timer()
        if self._reading_head and self._raw_head_bytes > self.max_header_bytes:
            self._head_too_large()
        elif self._in_body:
            # One timer per body, armed only when a body spans reads (never for a request
            # without a body); it re-arms itself while chunks keep coming.
            self._body_seen_at = self.loop.time()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.body_timeout, self._body_check)

    def send_400_response(self, msg: str) -> None:
        self._request_error(400, "invalid_request_error", "malformed HTTP request")

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        self._head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_head_timer()
        if self._finished:
            return
        if self._head_bytes > self.max_header_bytes:
            self._head_too_large()
            return
        if self.parser.should_upgrade() and self._get_upgrade() == b"websocket":
            self._request_error(
                400, "invalid_request_error", "WebSocket is not supported: use HTTP/1.1"
            )
            return
        self._in_body = True
        self.scope["extensions"] = self._extensions
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:
            cycle.transport = _HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        if not self._finished and self.cycle is not None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading_head = True
        self._raw_head_bytes = 0
        self._in_body = False
        self._cancel_body_timer()
        if not self._finished and self.cycle is not None:
            super().on_message_complete()

    # ------------------------------------------------------------------ timers & answers
    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._reading_head:
            return
        if self._raw_head_bytes:
            self._request_error(
                408,
                "invalid_request_error",
                f"request headers not received within {self.header_timeout:g} s",
            )
        else:
            self._finished = True
            self.transport.close()

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_check(self) -> None:
        self._body_timer = None
        if not self._in_body or self._finished or self.transport.is_closing():
            return
        remaining = self._body_seen_at + self.body_timeout - self.loop.time()
        if remaining > 0 or self.flow.read_paused:  # paused: the app is not reading yet
            self._body_timer = self.loop.call_later(max(remaining, 0.1), self._body_check)
            return
        self._request_error(
            408, "invalid_request_error", f"request body stalled for {self.body_timeout:g} s"
        )

    def _head_too_large(self) -> None:
        self._request_error(
            431,
            "invalid_request_error",
            f"request headers exceed {self.max_header_bytes} bytes",
        )

    def _request_error(self, status: int, error_type: str, message: str) -> None:
        _access.info("- - %d %s", status, message, extra={"status": status})
        self._refuse(status, error_type, message)

    def _refuse(self, status: int, error_type: str, message: str) -> None:
        """Answer with an error (unless a response is under way), then close."""
        self._flush_held_head()
        self._finished = True
        self._reading_head = False
        self._in_body = False
        self._cancel_head_timer()
        self._cancel_body_timer()
        self._unset_keepalive_if_required()
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self.transport.close()  # a response is under way: it cannot be answered twice
                return
            # The request broke mid-body: the app sees a disconnect, the client our answer.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(error_response(status, error_type, message))
        # Lingering close: send the answer and a FIN, read and drop what the client still
        # sends for a moment, then close. Closing at once with unread input would send a
        # reset, and the client might lose the answer.
        # TLS transports cannot half-close, and a transport already torn down refuses it: then
        # the answer goes out with a plain close.
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        try:
            self.transport.write_eof()
        except (OSError, RuntimeError):
            self.transport.close()
            return
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


def protocol_class(settings: Settings) -> type[GuardedProtocol]:
    """A ``GuardedProtocol`` class with the limits of ``settings``."""
    return type(
        "VastllmProtocol",
        (GuardedProtocol,),
        {
            "header_timeout": settings.header_timeout,
            "body_timeout": settings.body_timeout,
            "max_header_bytes": settings.max_header_bytes,
            "max_connections": settings.max_connections,
        },
    )


# --------------------------------------------------------------------------- ASGI guard


async def _send_error(
    send: Send,
    status: int,
    error_type: str,
    message: str,
    *,
    close: bool = False,
    cache: bool = False,
) -> None:
    body = error_json(error_type, message)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"request-id", b"req_" + token_hex(12).encode()),
    ]
    if cache:  # a messages route: every answer says whether the cache served it
        headers.append((b"x-cache", b"bypass"))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def is_messages_path(path: str) -> bool:
    """Whether ``path`` is one of the messages routes (large bodies, cached answers)."""
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/")
    return path in LARGE_BODY_PATHS


class GuardApp:
    """Body cap per route, HEAD as GET, JSON for anything the app leaves unanswered."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.large_body = settings.max_request_bytes
        self.small_body = settings.max_other_body_bytes
        self.key = KeyCheck(settings.api_key)

    def body_limit(self, path: str) -> int:
        return self.large_body if is_messages_path(path) else self.small_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        path = scope["path"]
        if self.key.required and is_messages_path(path) and not self.key.accepts(scope["headers"]):
            replay = self._unread_body(scope, receive, tracked_send)
        else:
            limit = self.body_limit(path)
            for name, value in scope["headers"]:
                if name == b"content-length":
                    if value.isdigit() and int(value) > limit:
                        await self._too_large(scope, send, limit)
                        return
                    break
            first = await self._read_body(scope, receive, send, limit)
            if first is None:
                return
            replay = self._replay(first, receive)

        if scope["method"] == "HEAD":
            scope = dict(scope)
            scope["method"] = "GET"  # uvicorn leaves the body out: it still sees HEAD
        try:
            await self.app(scope, replay, tracked_send)
        except Exception:
            _log.exception("unexpected error in the application")
            if not started:
                await _send_error(send, 500, "api_error", "internal proxy error", close=True)
            return
        if not started:
            # The app gave no answer (a client that went away gets none: uvicorn drops it).
            await _send_error(send, 500, "api_error", "internal proxy error", close=True)

    @staticmethod
    def _replay(first: Message, receive: Receive) -> Receive:
        """``receive`` that gives ``first`` (the whole body), then the real messages."""
        pending = [first]

        async def replay() -> Message:
            if pending:
                return pending.pop()
            return await receive()

        return replay

    def _unread_body(self, scope: Scope, receive: Receive, send: Send) -> Receive:
        """``receive`` for a request without the key: nothing is read unless the app asks,
        and then at most ``small_body`` bytes (more: 413 here, a disconnect for the app)."""
        read = False
        gone: Message = {"type": "http.disconnect"}

        async def lazy() -> Message:
            nonlocal read
            if read:
                return await receive()
            read = True
            first = await self._read_body(scope, receive, send, self.small_body)
            return gone if first is None else first

        return lazy

    async def _read_body(
        self, scope: Scope, receive: Receive, send: Send, limit: int
    ) -> Message | None:
        """The whole request body as one message (or the disconnect), None when answered."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message  # the client went away: the app sees it
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    await self._too_large(scope, send, limit)
                    return None
                chunks.append(chunk)
            if not message.get("more_body", False):
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                return {"type": "http.request", "body": body, "more_body": False}

    @staticmethod
    async def _too_large(scope: Scope, send: Send, limit: int) -> None:
        text = f"request body exceeds {limit} bytes"
        _access.info("%s %s 413 %s", scope["method"], scope["path"], text)
        await _send_error(
            send, 413, "request_too_large", text, close=True, cache=is_messages_path(scope["path"])
        )


# --------------------------------------------------------------------------- the server


MMAP_THRESHOLD = 64 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def limit_heap_fragmentation(threshold: int = MMAP_THRESHOLD) -> bool:
    """Serve allocations of ``threshold`` bytes and more from their own mappings (glibc).

    glibc raises its mmap threshold each time a large block is freed, after which answers of
    100 KB or so come from the heap; interleaved with the long-lived entries of the memory
    tier they fragment it, and the heap never shrinks: RSS went 31 -> 161 MB over 10,000 unique
    100 KB answers although the tier holds 16 MiB (benchmarks/proxy_memory_bench.py). With a
    fixed threshold such blocks go back to the system when freed. Returns whether it was set
    (False where the C library has no ``mallopt``: nothing to do there)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


def raise_file_limit(wanted: int) -> int:
    """Raise the soft limit of open files towards ``wanted`` (never above the hard limit);
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            _log.warning("cannot raise the open-files limit to %d: %s", target, exc)
    return soft


def connection_cap(settings: Settings) -> int:
    """``max_connections``, lowered if the file limit cannot hold it plus a reserve."""
    reserve = min(FD_RESERVE_MAX, 256 + settings.max_connections // 8)
    soft = raise_file_limit(settings.max_connections + reserve)
    fits = max(16, soft - min(FD_RESERVE_MAX, soft // 2))
    if settings.max_connections > fits:
        _log.warning(
            "VASTLLM_MAX_CONNECTIONS=%d does not fit the open-files limit %d: using %d",
            settings.max_connections,
            soft,
            fits,
        )
        return fits
    return settings.max_connections


def build_server(settings: Settings, app: ASGIApp) -> uvicorn.Server:
    """uvicorn serving ``app`` behind the guard, with every limit of ``settings``."""
    limits = dataclasses.replace(settings, max_connections=connection_cap(settings))
    config = uvicorn.Config(
        GuardApp(app, limits),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol_class(limits),
        ws="none",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        # Nothing reads the client address: X-Forwarded-* rewriting would be a layer per
        # request for nothing.
        proxy_headers=False,
        timeout_keep_alive=math.ceil(settings.keepalive_timeout),
        backlog=2048,
    )
    return Server(config)


# The collector's first generation is collected every GC_THRESHOLD allocations instead of
# Python's 700: a miss allocates a few thousand objects, nearly all freed by reference
# counting, and each collection also pays for what is in flight. Frozen at startup, the
# modules and the app (some 40,000 objects) are no longer traversed by the full collections.
# The collector took ~5 % of the proxy's CPU on streamed misses at C=32 before (perf record).
GC_THRESHOLD = 10_000


def tune_gc() -> None:
    """Freeze what exists now (for good: modules, app, clients) and collect less often."""
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, gen1, gen2)


class Server(uvicorn.Server):
    """uvicorn's server, tuning the garbage collector once the app has started."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        tune_gc()
