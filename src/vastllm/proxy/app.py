"""The ASGI application: routes, auth, cache, and the Ollama edge.

A raw ASGI app (no framework on the request path) with a pool of keep-alive connections to
Ollama (``upstream.py``) and a small Redis client (``resp.py``), both opened in the lifespan.
``create_app(settings)`` is the factory; nothing is created at import time.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from secrets import token_hex
from typing import Any

import orjson

from vastllm import __version__
from vastllm.proxy.cache import AnswerCache, CacheBypass, cache_key
from vastllm.proxy.config import Settings, redact_url, resolve_model
from vastllm.proxy.errors import ProxyError, error_json, invalid
from vastllm.proxy.metrics import Metrics
from vastllm.proxy.resp import RespClient
from vastllm.proxy.sse import encode_events, error_event
from vastllm.proxy.translate import (
    ChatRequest,
    ResponseAssembler,
    build_chat,
    estimate_prompt_tokens,
    new_message_id,
    new_tool_use_id,
    parse_request,
    prompt_tokens,
    replay_events,
)
from vastllm.proxy.upstream import (
    ConnectFailed,
    ConnectionLost,
    Response,
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_log = logging.getLogger("vastllm.proxy")
_access = logging.getLogger("vastllm.proxy.access")

_JSON = b"application/json"
_HEALTH_TIMEOUT = 2.0
_TAGS_TTL = 30.0
_GLOB_CHARS = set("*?[")


class _ClientGone(Exception):
    """The client closed the connection."""


class _UpstreamStreamError(Exception):
    def __init__(self, error_type: str, message: str, kind: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.kind = kind


@dataclass(slots=True)
class _Call:
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
    backend: str | None = None
    tokens: tuple[int, int] | None = None
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def base_headers(self, content_type: bytes) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", content_type), (b"request-id", self.request_id.encode())]
        if self.cache is not None:
            headers.append((b"x-cache", self.cache.encode()))
        headers.extend(self.extra_headers)
        return headers


def map_upstream_status(status: int, detail: str, model: str) -> ProxyError:
    """An Ollama HTTP error → the Anthropic error the client sees."""
    if status == 404:
        return ProxyError("not_found_error", f"model {model!r} is not available on the backend")
    if status in (429, 503):
        return ProxyError("overloaded_error", f"backend is overloaded: {detail}")
    if 400 <= status < 500:
        return invalid(f"backend rejected the request: {detail}")
    return ProxyError("api_error", f"backend error (HTTP {status}): {detail}")


def _decode_entry(stored: bytes) -> dict[str, Any] | None:
    try:
        entry = orjson.loads(stored)
    except orjson.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) else None


def _error_detail(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode(errors="replace").strip() or "no detail"
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])[:500]
    return "no detail"


def _transport_error(exc: UpstreamError) -> ProxyError:
    if isinstance(exc, ConnectFailed):
        return ProxyError("overloaded_error", "backend unreachable: cannot connect to Ollama")
    if isinstance(exc, UpstreamTimeout):
        return ProxyError("overloaded_error", "backend timed out")
    return ProxyError("overloaded_error", "backend connection failed")


def _full_name(name: str) -> str:
    return name if ":" in name else name + ":latest"


class ProxyApp:
    def __init__(self, settings: Settings, *, redis_client: Any = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.started_at = time.time()
        self._redis_client = redis_client
        self.upstream: UpstreamPool | None = None
        self.cache: AnswerCache | None = None
        self._thinking: dict[str, bool] = {}
        self._installed: tuple[float, frozenset[str]] = (0.0, frozenset())
        self._backend_names = frozenset(
            {settings.model, *(target for _pattern, target in settings.model_map)}
        )
        self._key = settings.api_key.encode() if settings.api_key else None
        self._routes: dict[tuple[str, str], tuple[str, Callable[[_Call], Awaitable[None]]]] = {
            ("POST", "/v1/messages"): ("messages", self._messages),
            ("POST", "/v1/messages/count_tokens"): ("count_tokens", self._count_tokens),
            ("GET", "/v1/models"): ("models", self._models),
            ("GET", "/"): ("root", self._root),
            ("HEAD", "/"): ("root", self._root),
            ("GET", "/health"): ("health", self._health),
            ("GET", "/health/liveness"): ("liveness", self._liveness),
            ("GET", "/health/readiness"): ("readiness", self._readiness),
            ("GET", "/metrics"): ("metrics", self._metrics),
        }
        self._paths = {path for _method, path in self._routes}

    # ------------------------------------------------------------------ lifecycle
    async def startup(self) -> None:
        settings = self.settings
        self.upstream = UpstreamPool(
            settings.ollama_url, settings.connect_timeout, settings.read_timeout
        )
        if settings.cache_enabled:
            client = self._redis_client
            if client is None:
                client = RespClient(settings.redis_url, connect_timeout=0.5, timeout=1.0)
            self.cache = AnswerCache(client, settings.cache_ttl)

    async def shutdown(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
        if self.cache is not None:
            await self.cache.close()

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

    # ------------------------------------------------------------------ ASGI entry
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = _Call(
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
            await self._send_error(call, exc)
        except _ClientGone:
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
            await self._send_error(call, ProxyError("api_error", "internal proxy error"))
        finally:
            elapsed = time.perf_counter() - call.started
            self.metrics.record_request(route_name, call.status, elapsed)
            if route_name not in ("liveness", "metrics") or call.status >= 400:
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
                        "backend_model": call.backend,
                        "tokens": call.tokens,
                    },
                )

    # ------------------------------------------------------------------ responses
    async def _start(self, call: _Call, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        call.status = status
        call.response_started = True
        await call.send({"type": "http.response.start", "status": status, "headers": headers})

    async def _send_body(
        self,
        call: _Call,
        status: int,
        body: bytes,
        content_type: bytes = _JSON,
        *,
        head: bool = False,
    ) -> None:
        headers = call.base_headers(content_type)
        headers.append((b"content-length", str(len(body)).encode()))
        await self._start(call, status, headers)
        call.response_done = True
        await call.send({"type": "http.response.body", "body": b"" if head else body})

    async def _send_error(self, call: _Call, exc: ProxyError) -> None:
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
        await self._send_body(call, exc.status, error_json(exc.error_type, exc.message))

    # ------------------------------------------------------------------ request helpers
    def _check_key(self, call: _Call, *, open_route: bool = False) -> None:
        if self._key is None or open_route:
            return
        supplied = call.headers.get(b"x-api-key")
        if supplied is None:
            auth = call.headers.get(b"authorization", b"")
            if auth[:7].lower() == b"bearer ":
                supplied = auth[7:].strip()
        if supplied is None:
            raise ProxyError(
                "authentication_error", "missing API key: send x-api-key or Authorization: Bearer"
            )
        if not hmac.compare_digest(supplied, self._key):
            raise ProxyError("authentication_error", "invalid API key")

    async def _read_body(self, call: _Call) -> bytes:
        limit = self.settings.max_request_bytes
        declared = call.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ProxyError("request_too_large", f"request body exceeds {limit} bytes")
        parts: list[bytes] = []
        size = 0
        while True:
            message = await call.receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ProxyError("request_too_large", f"request body exceeds {limit} bytes")
            parts.append(chunk)
            if not message.get("more_body", False):
                return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _json_body(self, call: _Call) -> Any:
        body = await self._read_body(call)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise invalid(f"request body: malformed JSON ({exc.msg})") from None

    def _watch_disconnect(self, call: _Call) -> asyncio.Task[None]:
        task = asyncio.current_task()

        async def watch() -> None:
            message = await call.receive()
            if message["type"] == "http.disconnect" and not call.response_done:
                call.disconnected = True
                if task is not None:
                    task.cancel()

        return asyncio.create_task(watch())

    async def _ollama_json(self, method: str, path: str, body: Any = None) -> Any:
        """A small Ollama API call with the short health timeout; raises UpstreamError."""
        assert self.upstream is not None
        payload = None if body is None else orjson.dumps(body)
        async with asyncio.timeout(_HEALTH_TIMEOUT + 1):
            response = await self.upstream.request(method, path, payload, timeout=_HEALTH_TIMEOUT)
            data = await response.read()
        if response.status != 200:
            raise UpstreamError(f"HTTP {response.status} from {path}")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"malformed JSON from {path}") from None

    async def _installed_models(self) -> frozenset[str]:
        fetched_at, names = self._installed
        if time.monotonic() - fetched_at < _TAGS_TTL:
            return names
        try:
            data = await self._ollama_json("GET", "/api/tags")
            names = frozenset(
                str(item.get("name") or item.get("model"))
                for item in data.get("models", [])
                if isinstance(item, dict)
            )
        except (UpstreamError, TimeoutError, AttributeError):
            return names
        self._installed = (time.monotonic(), names)
        return names

    async def resolve(self, name: str) -> str:
        target = resolve_model(name, self.settings.alias_rules)
        if target is not None:
            return target
        if name in self._backend_names:
            return name
        installed = await self._installed_models()
        if name in installed or _full_name(name) in installed:
            return name
        raise ProxyError(
            "not_found_error",
            f"model: {name!r} matches no alias and is not a model on the backend",
        )

    async def supports_thinking(self, model: str) -> bool:
        known = self._thinking.get(model)
        if known is not None:
            return known
        try:
            data = await self._ollama_json("POST", "/api/show", {"model": model})
        except (UpstreamError, TimeoutError):
            return False  # backend down or model missing: the chat call will report it
        capabilities = data.get("capabilities") if isinstance(data, dict) else None
        if not isinstance(capabilities, list):
            capabilities = []
        self._thinking[model] = "thinking" in capabilities
        return self._thinking[model]

    async def _cache_lookup(
        self, call: _Call, key: str | None
    ) -> tuple[dict[str, Any] | None, str | None]:
        """(stored answer or None, key to store under or None). An entry that does not decode
        to a JSON object (corrupted, written by something else) is a miss, never a 5xx."""
        if key is None or self.cache is None:
            call.cache = "bypass"
            self.metrics.record_cache("bypass")
            return None, None
        try:
            stored = await self.cache.get(key)
        except CacheBypass:
            call.cache = "bypass"
            self.metrics.record_cache("bypass")
            return None, None
        entry = _decode_entry(stored) if stored is not None else None
        call.cache = "hit" if entry is not None else "miss"
        self.metrics.record_cache(call.cache)
        return entry, key

    def _wants_cache(self, call: _Call) -> bool:
        control = call.headers.get(b"cache-control", b"").lower()
        return self.cache is not None and b"no-cache" not in control and b"no-store" not in control

    # ------------------------------------------------------------------ /v1/messages
    async def _messages(self, call: _Call) -> None:
        call.cache = "bypass"  # until a lookup says otherwise: every answer has x-cache
        self._check_key(call)
        request = parse_request(await self._json_body(call))
        call.model = request.model
        backend = await self.resolve(request.model)
        call.backend = backend
        key = cache_key(request.shaping_fields(backend)) if self._wants_cache(call) else None
        stored, key = await self._cache_lookup(call, key)
        if stored is not None:
            await self._answer_from_cache(call, request, stored)
            return
        watcher = self._watch_disconnect(call)
        try:
            await self._generate(call, request, backend, key)
        finally:
            watcher.cancel()

    async def _answer_from_cache(
        self, call: _Call, request: ChatRequest, message: dict[str, Any]
    ) -> None:
        message["id"] = new_message_id()
        message["model"] = request.model
        for block in message.get("content") or ():
            if isinstance(block, dict) and block.get("type") == "tool_use":
                block["id"] = new_tool_use_id()  # ids are per answer, not shared across sessions
        usage = message.get("usage") or {}
        call.tokens = (usage.get("input_tokens", 0), usage.get("output_tokens", 0))
        if not request.stream:
            await self._send_body(call, 200, orjson.dumps(message))
            return
        headers = call.base_headers(b"text/event-stream")
        headers.append((b"cache-control", b"no-cache"))
        await self._start(call, 200, headers)
        self.metrics.ttft.observe(time.perf_counter() - call.started)
        call.response_done = True
        await call.send(
            {"type": "http.response.body", "body": encode_events(replay_events(message))}
        )

    async def _generate(
        self, call: _Call, request: ChatRequest, backend: str, key: str | None
    ) -> None:
        assert self.upstream is not None
        thinking = await self.supports_thinking(backend)
        # Stream from Ollama when the client streams, and when stop sequences must be matched
        # as text arrives (so generation stops at the match instead of running on).
        upstream_stream = request.stream or bool(request.stop_sequences)
        chat = build_chat(request, backend, stream=upstream_stream, supports_thinking=thinking)
        assembler = ResponseAssembler(
            message_id=new_message_id(),
            model=request.model,
            stop_sequences=request.stop_sequences,
            thinking=request.thinking,
            emit=request.stream,
            input_estimate=estimate_prompt_tokens(chat),
        )

        final: list[bytes] = []

        async def complete() -> bytes:
            """Account for and store the finished answer, before the client sees its end
            (so a client that asks again right away gets the hit)."""
            encoded = orjson.dumps(assembler.message())
            final.append(encoded)
            call.tokens = (assembler.input_tokens, assembler.output_tokens)
            self.metrics.record_tokens(assembler.input_tokens, assembler.output_tokens)
            if key is not None and self.cache is not None:
                await self.cache.put(key, encoded)
            return encoded

        try:
            response = await self.upstream.request("POST", "/api/chat", orjson.dumps(chat))
        except UpstreamError as exc:
            self.metrics.record_upstream_error(exc.kind)
            raise _transport_error(exc) from None
        try:
            if response.status != 200:
                detail = _error_detail(await self._read_error(response))
                self.metrics.record_upstream_error(f"http_{response.status}")
                raise map_upstream_status(response.status, detail, backend)
            if upstream_stream:
                await self._relay(call, request, response, assembler, complete)
                if request.stream:
                    return
            else:
                try:
                    body = await response.read()
                except UpstreamError as exc:
                    self.metrics.record_upstream_error(exc.kind)
                    raise _transport_error(exc) from None
                assembler.feed(self._parse_chunk(body))
                if not assembler.finished:
                    raise ProxyError("api_error", "backend ended the answer early")
                await complete()
        except _UpstreamStreamError as exc:
            self.metrics.record_upstream_error(exc.kind)
            raise ProxyError(exc.error_type, exc.message) from None
        finally:
            response.close()
        await self._send_body(call, 200, final[0])

    async def _relay(
        self,
        call: _Call,
        request: ChatRequest,
        response: Response,
        assembler: ResponseAssembler,
        complete: Callable[[], Awaitable[bytes]],
    ) -> None:
        """Relay Ollama's NDJSON stream as it arrives (as SSE events when the client streams).

        The SSE response starts with Ollama's first chunk: its headers and message_start go out
        together with the first token (one write less; Ollama sends nothing earlier anyway)."""
        first = True

        async def deliver(events: list[tuple[str, dict[str, Any]]]) -> None:
            nonlocal first
            if not request.stream:
                if assembler.finished:
                    await complete()
                return
            if first and events:
                headers = call.base_headers(b"text/event-stream")
                headers.append((b"cache-control", b"no-cache"))
                await self._start(call, 200, headers)
                events = assembler.start_events() + events
                self.metrics.ttft.observe(time.perf_counter() - call.started)
                first = False
            tail: list[tuple[str, dict[str, Any]]] = []
            if assembler.finished:
                # Tokens go out at once; the end (message_delta, message_stop) only after the
                # answer is stored, so a client that asks again right away gets the hit.
                cut = next(i for i, (name, _) in enumerate(events) if name == "message_delta")
                events, tail = events[:cut], events[cut:]
            if events:
                await call.send(
                    {"type": "http.response.body", "body": encode_events(events), "more_body": True}
                )
            if tail:
                await complete()
                call.response_done = True
                await call.send(
                    {"type": "http.response.body", "body": encode_events(tail), "more_body": False}
                )

        buffer = b""
        try:
            async for raw in response.iter_chunks():
                buffer += raw
                if b"\n" not in buffer:
                    continue
                *lines, buffer = buffer.split(b"\n")
                events: list[tuple[str, dict[str, Any]]] = []
                for line in lines:
                    if line.strip():
                        events.extend(assembler.feed(self._parse_chunk(line)))
                        if assembler.finished:
                            break
                await deliver(events)
                if assembler.finished:
                    if assembler.stop_sequence is None:
                        await self._drain(response)  # keeps the connection for reuse
                    return  # a stop sequence: closing the connection stops generation
            if buffer.strip():
                await deliver(assembler.feed(self._parse_chunk(buffer)))
        except _UpstreamStreamError as exc:
            self.metrics.record_upstream_error(exc.kind)
            raise ProxyError(exc.error_type, exc.message) from None
        except UpstreamTimeout:
            self.metrics.record_upstream_error("stream_cut")
            raise ProxyError("overloaded_error", "backend timed out mid-answer") from None
        except ConnectionLost:
            self.metrics.record_upstream_error("stream_cut")
            raise ProxyError("api_error", "backend connection lost mid-answer") from None
        if not assembler.finished:
            self.metrics.record_upstream_error("stream_cut")
            raise ProxyError("api_error", "backend ended the stream before the answer was done")

    @staticmethod
    async def _drain(response: Response) -> None:
        """Read what follows Ollama's final chunk (the end of the chunked body)."""
        try:
            async with asyncio.timeout(1.0):
                async for _chunk in response.iter_chunks():
                    pass
        except (UpstreamError, TimeoutError):
            response.close()

    @staticmethod
    async def _read_error(response: Response) -> bytes:
        try:
            return await response.read()
        except UpstreamError:
            return b""

    @staticmethod
    def _parse_chunk(line: bytes) -> dict[str, Any]:
        try:
            chunk = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise _UpstreamStreamError(
                "api_error", "backend sent malformed data", "bad_chunk"
            ) from None
        if not isinstance(chunk, dict):
            raise _UpstreamStreamError("api_error", "backend sent malformed data", "bad_chunk")
        if "error" in chunk:
            detail = str(chunk["error"])[:500]
            kind = "overloaded_error" if "overload" in detail.lower() else "api_error"
            raise _UpstreamStreamError(kind, f"backend error: {detail}", "stream_error")
        return chunk

    # ------------------------------------------------------------------ count_tokens
    async def _count_tokens(self, call: _Call) -> None:
        call.cache = "bypass"
        self._check_key(call)
        request = parse_request(await self._json_body(call), count_only=True)
        call.model = request.model
        backend = await self.resolve(request.model)
        call.backend = backend
        fields = request.shaping_fields(backend)
        for name in ("max_tokens", "temperature", "top_p", "top_k", "stop_sequences"):
            fields.pop(name)
        key = cache_key(fields, "count") if self._wants_cache(call) else None
        stored, key = await self._cache_lookup(call, key)
        if stored is not None:
            await self._send_body(call, 200, orjson.dumps(stored))
            return
        assert self.upstream is not None
        chat = build_chat(request, backend, stream=False, supports_thinking=False, num_predict=1)
        try:
            response = await self.upstream.request("POST", "/api/chat", orjson.dumps(chat))
            content = await response.read()
        except UpstreamError as exc:
            self.metrics.record_upstream_error(exc.kind)
            raise _transport_error(exc) from None
        if response.status != 200:
            self.metrics.record_upstream_error(f"http_{response.status}")
            raise map_upstream_status(response.status, _error_detail(content), backend)
        try:
            count = orjson.loads(content).get("prompt_eval_count")
        except (orjson.JSONDecodeError, AttributeError):
            count = None
        if not isinstance(count, int):
            raise ProxyError("api_error", "backend did not report a prompt token count")
        body = orjson.dumps({"input_tokens": prompt_tokens(count, estimate_prompt_tokens(chat))})
        await self._send_body(call, 200, body)
        if key is not None and self.cache is not None:
            await self.cache.put(key, body)

    # ------------------------------------------------------------------ models
    async def _models(self, call: _Call) -> None:
        self._check_key(call, open_route=self.settings.open_metrics)
        names: list[str] = []
        for pattern, _target in self.settings.model_map:
            if not _GLOB_CHARS & set(pattern):
                names.append(pattern)
        names.extend(sorted(self._backend_names))
        names.extend(sorted(await self._installed_models()))
        created = datetime.fromtimestamp(self.started_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        seen: set[str] = set()
        data = []
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            data.append({"type": "model", "id": name, "display_name": name, "created_at": created})
        body = {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        await self._send_body(call, 200, orjson.dumps(body))

    # ------------------------------------------------------------------ health & co
    async def _root(self, call: _Call) -> None:
        body = orjson.dumps({"service": "vastllm-proxy", "version": __version__})
        await self._send_body(call, 200, body, head=call.scope["method"] == "HEAD")

    async def _liveness(self, call: _Call) -> None:
        await self._send_body(call, 200, b'{"status":"ok"}')

    async def health_report(self) -> dict[str, Any]:
        async def fetch(path: str) -> Any:
            return await self._ollama_json("GET", path)

        results: tuple[Any, ...] = await asyncio.gather(
            fetch("/api/version"), fetch("/api/tags"), fetch("/api/ps"), return_exceptions=True
        )
        version, tags, running = results
        reachable = not isinstance(version, BaseException)
        ollama: dict[str, Any] = {
            "reachable": reachable,
            "url": redact_url(self.settings.ollama_url),
            "version": version.get("version") if isinstance(version, dict) else None,
        }
        if not reachable:
            ollama["error"] = f"{type(version).__name__}: cannot reach Ollama"

        def names(listing: Any) -> set[str]:
            if not isinstance(listing, dict):
                return set()
            return {
                str(item.get("name") or item.get("model"))
                for item in listing.get("models") or []
                if isinstance(item, dict)
            }

        wanted = _full_name(self.settings.model)
        present_names, loaded_names = names(tags), names(running)
        model = {
            "name": self.settings.model,
            "present": wanted in present_names,
            "loaded": wanted in loaded_names,
        }
        redis: dict[str, Any] = {"enabled": self.cache is not None, "reachable": None}
        if self.cache is not None:
            redis["reachable"] = await self.cache.ping()
            if not redis["reachable"]:
                redis["error"] = self.cache.last_error
        if not reachable:
            status = "down"
        elif not model["present"] or redis["reachable"] is False:
            status = "degraded"
        else:
            status = "ok"
        counts = self.metrics.cache
        return {
            "status": status,
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "ollama": ollama,
            "model": model,
            "redis": redis,
            "cache": {
                "hits": counts["hit"],
                "misses": counts["miss"],
                "bypasses": counts["bypass"],
                "hit_ratio": round(self.metrics.hit_ratio, 6),
            },
        }

    async def _health(self, call: _Call) -> None:
        report = await self.health_report()
        status = 503 if report["status"] == "down" else 200
        await self._send_body(call, status, orjson.dumps(report))

    async def _readiness(self, call: _Call) -> None:
        report = await self.health_report()
        ready = report["ollama"]["reachable"] and report["model"]["present"]
        body = orjson.dumps(
            {"status": "ready" if ready else "not_ready", "health": report["status"]}
        )
        await self._send_body(call, 200 if ready else 503, body)

    async def _metrics(self, call: _Call) -> None:
        self._check_key(call, open_route=self.settings.open_metrics)
        await self._send_body(
            call, 200, self.metrics.render(), b"text/plain; version=0.0.4; charset=utf-8"
        )


def create_app(settings: Settings, *, redis_client: Any = None) -> ProxyApp:
    """The ASGI app for ``settings``; clients are opened by the ASGI lifespan (or ``startup``)."""
    return ProxyApp(settings, redis_client=redis_client)
