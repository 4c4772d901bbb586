"""The small ASGI framework the proxy runs on: no third-party framework on the request path.

``Router`` is the ASGI callable: the lifespan runs ``startup``/``shutdown``, an HTTP request goes
to the handler of its (method, path), and every request ends in one access-log line and the
request metrics, whatever happened. A handler gets a ``Call`` (the request, the ``send`` channel
and what the access log reports) and answers with ``send_body`` or by starting a stream itself;
raising ``ProxyError`` answers an Anthropic-shaped error (or ends a started stream with an SSE
``error`` event).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from secrets import token_hex
from typing import Any

import orjson

from vastllm.proxy.errors import ProxyError, error_json, invalid
from vastllm.proxy.metrics import Metrics
from vastllm.proxy.sse import error_event

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = b"application/json"

_log = logging.getLogger("vastllm.proxy")
_access = logging.getLogger("vastllm.proxy.access")

# Routes logged only when they fail: probes and scrapes would drown the access log.
_QUIET_ROUTES = ("liveness", "metrics")


class ClientGone(Exception):
    """The client closed the connection."""


@dataclass(slots=True)
class Call:
    """Per-request state, used for the answer's headers, the access log and the metrics."""

    scope: Scope
    receive: Receive
    send: Send
    request_id: str
    started: float
    headers: dict[bytes, bytes]
    status: int = 0
    response_started: bool = False
    response_done: bool = False
    disconnected: bool = False
    cache: str | None = None
    model: str | None = None
    backend_model: str | None = None
    tokens: tuple[int, int] | None = None
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def base_headers(self, content_type: bytes) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", content_type), (b"request-id", self.request_id.encode())]
        if self.cache is not None:
            headers.append((b"x-cache", self.cache.encode()))
        headers.extend(self.extra_headers)
        return headers


Handler = Callable[[Call], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    name: str  # the route label of the metrics and the access log
    handler: Handler


# ------------------------------------------------------------------------------ responses


async def start_response(call: Call, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    call.status = status
    call.response_started = True
    await call.send({"type": "http.response.start", "status": status, "headers": headers})


async def send_body(
    call: Call, status: int, body: bytes, content_type: bytes = JSON, *, head: bool = False
) -> None:
    """A whole answer at once (``head``: the headers only, as for ``HEAD``)."""
    headers = call.base_headers(content_type)
    headers.append((b"content-length", str(len(body)).encode()))
    await start_response(call, status, headers)
    call.response_done = True
    await call.send({"type": "http.response.body", "body": b"" if head else body})


async def send_error(call: Call, exc: ProxyError) -> None:
    if call.response_started:
        # Headers are gone already (an SSE stream): end it with an error event.
        if not call.response_done:
            call.response_done = True
            await call.send(
                {
                    "type": "http.response.body",
                    "body": error_event(exc.error_type, exc.message),
                    "more_body": False,
                }
            )
        return
    if exc.status == 401:
        call.extra_headers.append((b"x-should-retry", b"false"))
    await send_body(call, exc.status, error_json(exc.error_type, exc.message))


# ------------------------------------------------------------------------------- requests


async def read_body(call: Call, limit: int) -> bytes:
    """The request body; 413 ``request_too_large`` past ``limit`` bytes."""
    declared = call.headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProxyError("request_too_large", f"request body exceeds {limit} bytes")
    parts: list[bytes] = []
    size = 0
    while True:
        message = await call.receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ProxyError("request_too_large", f"request body exceeds {limit} bytes")
        parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


async def read_json(call: Call, limit: int) -> Any:
    body = await read_body(call, limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"request body: malformed JSON ({exc.msg})") from None


DISCONNECT_EXTENSION = "vastllm.disconnect"


class Watch:
    """What ``watch_disconnect`` returns: ``cancel()`` it when the answer is done."""

    __slots__ = ("cancel",)

    def __init__(self, cancel: Callable[[], object]) -> None:
        self.cancel = cancel


def watch_disconnect(call: Call) -> Watch:
    """Cancel the current task if the client goes away before the answer's end (once the
    body is read); ``cancel()`` the returned watch when done.

    With the proxy's own server (``server.GuardedProtocol``), through its ASGI extension
    ``vastllm.disconnect``: a callback run when the connection is lost. Under another server,
    a task that waits for ``http.disconnect`` (a task per request cost ~15 µs of CPU per miss,
    issue 8)."""
    task = asyncio.current_task()
    hook = call.scope.get("extensions", {}).get(DISCONNECT_EXTENSION)
    if hook is not None and task is not None:

        def lost() -> None:
            if not call.response_done:
                call.disconnected = True
                task.cancel()

        return Watch(hook(lost))

    async def watch() -> None:
        message = await call.receive()
        if message["type"] == "http.disconnect" and not call.response_done:
            call.disconnected = True
            if task is not None:
                task.cancel()

    return Watch(asyncio.create_task(watch()).cancel)


# --------------------------------------------------------------------------------- router


class Router:
    """The ASGI application: lifespan, dispatch by (method, path), errors, access log."""

    def __init__(self, routes: Iterable[Route], metrics: Metrics) -> None:
        self.metrics = metrics
        self._routes: dict[tuple[str, str], tuple[str, Handler]] = {
            (route.method, route.path): (route.name, route.handler) for route in routes
        }
        self._paths = {path for _method, path in self._routes}

    async def startup(self) -> None:
        """Open clients; called by the ASGI lifespan. Override."""

    async def shutdown(self) -> None:
        """Close clients; called by the ASGI lifespan. Override."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = Call(
            scope=scope,
            receive=receive,
            send=send,
            request_id="req_" + token_hex(12),
            started=time.perf_counter(),
            headers=dict(scope["headers"]),
        )
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        method = scope["method"]
        route_name = "other"
        try:
            found = self._routes.get((method, path))
            if found is None:
                if path in self._paths:
                    raise ProxyError("invalid_request_error", f"method {method} not allowed", 405)
                raise ProxyError("not_found_error", f"no route for {method} {path}")
            route_name, handler = found
            await handler(call)
        except ProxyError as exc:
            await send_error(call, exc)
        except ClientGone:
            call.status = call.status if call.response_done else 499
        except asyncio.CancelledError:
            if not call.disconnected:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            call.status = call.status if call.response_done else 499
        except Exception:
            _log.exception("unexpected error", extra={"request_id": call.request_id})
            await send_error(call, ProxyError("api_error", "internal proxy error"))
        finally:
            elapsed = time.perf_counter() - call.started
            self.metrics.record_request(route_name, call.status, elapsed)
            if (route_name not in _QUIET_ROUTES or call.status >= 400) and _access.isEnabledFor(
                logging.INFO
            ):
                _access.info(
                    "%s %s %s",
                    method,
                    path,
                    call.status,
                    extra={
                        "request_id": call.request_id,
                        "status": call.status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "cache": call.cache,
                        "model": call.model,
                        "backend_model": call.backend_model,
                        "tokens": call.tokens,
                    },
                )
