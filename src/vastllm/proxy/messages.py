"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: the Anthropic Messages API.

A request is validated and translated (``translate_request``), its model resolved
(``models.ModelCatalog``), looked up in the cache (``cache``), and otherwise answered by the
backend (``backend.Backend``) through ``translate_response``: relayed as SSE events as Ollama's
chunks arrive when the client streams, or as one JSON message.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from vastllm.proxy.asgi import (
    Call,
    Route,
    read_json,
    send_body,
    start_response,
    watch_disconnect,
)
from vastllm.proxy.backend import ChatReply
from vastllm.proxy.cache import CacheBypass, cache_key
from vastllm.proxy.context import Context
from vastllm.proxy.errors import BackendBadReply, BackendError, BackendStatus, ProxyError
from vastllm.proxy.models import ModelCatalog
from vastllm.proxy.sse import encode_event, encode_events
from vastllm.proxy.translate_request import ChatRequest, build_chat, parse_request
from vastllm.proxy.translate_response import (
    Event,
    ResponseAssembler,
    anthropic_error,
    estimate_prompt_tokens,
    mid_answer_error,
    new_message_id,
    new_tool_use_id,
    prompt_tokens,
    replay_events,
    sane_count,
    start_events,
)
from vastllm.proxy.window import overflow_numbers, overflow_of, too_long

_SSE = b"text/event-stream"
_PING = encode_event("ping", {"type": "ping"})
_CLOCK_SLACK = 0.001  # s: the event loop's clock resolution (uvloop counts milliseconds)
# Fields that do not change a prompt's token count (left out of the count_tokens cache key).
_NOT_COUNTED = ("max_tokens", "temperature", "top_p", "top_k", "stop_sequences")


# What a single-flight follower learns from its leader: ("ok", the encoded final message),
# ("error", the ProxyError the leader's client got) or ("retry", None): the leader went away.
Outcome = tuple[str, Any]


class Pinger:
    """The wait for the first token, on one timer.

    For a streaming client (``interval`` set): SSE ``ping`` events every ``interval`` seconds;
    the first one starts the SSE response (headers, ``message_start``, ``ping``); ``stop()``
    (awaited before anything else is sent) ends them. With ``timeout`` set: the first-token
    timeout; past it, the current task is cancelled and ``timed_out()`` says it was this
    (``arrived()`` ends it, at the backend's first chunk). A timer, not a task, runs until
    something is due: a request answered before costs one timer (an ``asyncio.timeout`` beside
    it cost another ~8 µs per streamed miss, issue 8)."""

    __slots__ = (
        "_call",
        "_cancelling",
        "_deadline",
        "_expired",
        "_handle",
        "_interval",
        "_loop",
        "_next_ping",
        "_owner",
        "_start_events",
        "_task",
    )

    def __init__(
        self,
        call: Call,
        interval: float | None,
        start_events: Callable[[], list[Event]],
        timeout: float | None = None,
    ) -> None:
        self._call = call
        self._interval = interval
        self._start_events = start_events
        self._loop = loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self._expired = False
        self._owner: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._deadline: float | None = None
        now = loop.time()
        self._next_ping: float | None = None if interval is None else now + interval
        if timeout is not None:
            self._owner = owner = asyncio.current_task()
            self._cancelling = owner.cancelling() if owner is not None else 0
            self._deadline = now + timeout
        self._handle: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        """The timer for whatever is due first: the next ping or the deadline."""
        due = [t for t in (self._next_ping, self._deadline) if t is not None]
        self._handle = self._loop.call_at(min(due), self._fire) if due else None

    def _fire(self) -> None:
        # Due within a millisecond counts as due: the loop's clock has that resolution, and a
        # timer armed for a time may see a clock a rounding error short of it.
        now = self._loop.time() + _CLOCK_SLACK
        deadline = self._deadline
        if deadline is not None and now >= deadline:
            self._handle = None
            self._expired = True
            self._deadline = None
            if self._owner is not None:
                self._owner.cancel()
            return
        next_ping = self._next_ping
        if next_ping is not None and now >= next_ping:
            # a slow client: never two pings at once
            if self._task is None or self._task.done():
                self._task = self._loop.create_task(self._ping())
            self._next_ping = now + self._interval if self._interval is not None else None
        self._arm()

    def arrived(self) -> None:
        """The backend's first chunk came: the first-token timeout is over (pings go on
        until ``stop()``)."""
        deadline = self._deadline
        if deadline is None:
            return
        self._deadline = None
        if self._next_ping is not None and self._next_ping <= deadline:
            return  # the timer is set for the next ping already
        if self._handle is not None:
            self._handle.cancel()
        self._arm()

    def timed_out(self) -> bool:
        """Whether the task's ``CancelledError`` is this first-token timeout's (and not also
        a cancellation from elsewhere, e.g. the client going away)."""
        if not self._expired or self._owner is None:
            return False
        return self._owner.uncancel() <= self._cancelling

    async def _ping(self) -> None:
        call = self._call
        try:
            if call.response_started:
                body = _PING
            else:
                headers = call.base_headers(_SSE)
                headers.append((b"cache-control", b"no-cache"))
                await start_response(call, 200, headers)
                body = encode_events(self._start_events())
            await call.send({"type": "http.response.body", "body": body, "more_body": True})
        except Exception:  # the client went away: the disconnect watcher acts
            return

    async def stop(self) -> None:
        self._deadline = self._next_ping = None  # nothing is due any more (arrived() included)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        task, self._task = self._task, None
        if task is not None and not task.done():
            await asyncio.wait([task])


def _decode_entry(stored: bytes) -> dict[str, Any] | None:
    try:
        entry = orjson.loads(stored)
    except orjson.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) else None


class MessageRoutes:
    def __init__(self, context: Context, catalog: ModelCatalog) -> None:
        self._context = context
        self._catalog = catalog
        self._metrics = context.metrics
        self._max_bytes = context.settings.max_request_bytes
        self._ping_interval = context.settings.ping_interval
        self._first_token_timeout = context.settings.first_token_timeout
        # Single-flight: the generation in progress for each cache key (see _lead/_follow).
        self._flights: dict[str, asyncio.Future[Outcome]] = {}

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/v1/messages", "messages", self.messages),
            Route("POST", "/v1/messages/count_tokens", "count_tokens", self.count_tokens),
        ]

    # ------------------------------------------------------------------ cache
    def _wants_cache(self, call: Call) -> bool:
        control = call.headers.get(b"cache-control", b"").lower()
        return (
            self._context.cache is not None
            and b"no-cache" not in control
            and b"no-store" not in control
        )

    async def _cache_lookup(
        self, call: Call, key: str | None
    ) -> tuple[dict[str, Any] | None, str | None]:
        """(stored answer or None, key to store under or None). An entry that does not decode
        to a JSON object (corrupted, written by something else) is a miss, never a 5xx."""
        cache = self._context.cache
        if key is None or cache is None:
            call.cache = "bypass"
            self._metrics.record_cache("bypass")
            return None, None
        try:
            stored = await cache.get(key)
        except CacheBypass:
            call.cache = "bypass"
            self._metrics.record_cache("bypass")
            return None, None
        entry = _decode_entry(stored) if stored is not None else None
        call.cache = "hit" if entry is not None else "miss"
        self._metrics.record_cache(call.cache)
        return entry, key

    async def _store(self, key: str | None, body: bytes) -> None:
        cache = self._context.cache
        if key is not None and cache is not None:
            await cache.put(key, body)

    def _remember(self, key: str | None, body: bytes) -> None:
        """The finished answer into the memory tier, at once (no I/O): done before the
        requests waiting for the same answer are released, so one that arrives after that
        finds it (never a second generation)."""
        cache = self._context.cache
        if key is not None and cache is not None:
            cache.remember(key, body)

    async def _finish(
        self, key: str | None, body: bytes, send_last: Callable[[], Awaitable[None]]
    ) -> None:
        """Send the answer's last bytes (``send_last``) and put the answer (``_remember``ed
        before) in Redis: after the client has its answer when the memory tier holds it
        (an immediate repeat is a hit there), before when it does not (too large for it)."""
        cache = self._context.cache
        if key is None or cache is None or len(body) > cache.max_entry_bytes:
            await send_last()
        elif key in cache.memory:
            await send_last()
            await cache.persist(key, body)
        else:
            await cache.persist(key, body)
            await send_last()

    def _backend_failed(
        self, exc: BackendError, model: str, chat: dict[str, Any] | None = None
    ) -> ProxyError:
        too_big = self._too_long(exc, chat)
        if too_big is not None:
            return too_big
        self._metrics.record_upstream_error(exc.kind)
        return anthropic_error(exc, model)

    def _too_long(self, exc: BackendError, chat: dict[str, Any] | None) -> ProxyError | None:
        """Ollama refused a prompt over the window (num_ctx, truncate off): Anthropic's 400
        ``prompt is too long: N tokens > M maximum``."""
        found = overflow_of(exc) if chat is not None else None
        if found is None or chat is None:
            return None
        self._metrics.record_upstream_error("prompt_too_long")
        window = int(
            chat.get("options", {}).get("num_ctx") or self._context.settings.context_window
        )
        return too_long(*overflow_numbers(found, window, estimate_prompt_tokens(chat)))

    # ------------------------------------------------------------------ /v1/messages
    async def messages(self, call: Call) -> None:
        call.cache = "bypass"  # until a lookup says otherwise: every answer has x-cache
        self._context.auth.check(call)
        request = parse_request(await read_json(call, self._max_bytes))
        call.model = request.model
        backend_model = await self._catalog.resolve(request.model)
        call.backend_model = backend_model
        key = cache_key(request.shaping_fields(backend_model)) if self._wants_cache(call) else None
        stored, store_key = await self._cache_lookup(call, key)
        if stored is not None:
            await self._answer_from_cache(call, request, stored)
            return
        watcher = watch_disconnect(call)
        try:
            while key is not None and (flight := self._flights.get(key)) is not None:
                if await self._follow(call, request, flight):
                    return
            await self._lead(call, request, backend_model, key, store_key)
        finally:
            watcher.cancel()

    # ------------------------------------------------------------------ single-flight
    async def _lead(
        self,
        call: Call,
        request: ChatRequest,
        backend_model: str,
        key: str | None,
        store_key: str | None,
    ) -> None:
        """Generate the answer; identical requests arriving meanwhile (same cache key) wait
        for it instead of generating again (``_follow``)."""
        if key is None:
            await self._generate(call, request, backend_model, store_key, None)
            return
        flight: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._flights[key] = flight

        def publish(outcome: Outcome) -> None:
            if self._flights.get(key) is flight:
                del self._flights[key]
            if not flight.done():
                flight.set_result(outcome)

        try:
            await self._generate(call, request, backend_model, store_key, publish)
        except ProxyError as exc:
            publish(("error", exc))
            raise
        finally:
            publish(("retry", None))  # no answer (the leader's client went away): try again

    async def _follow(
        self, call: Call, request: ChatRequest, flight: asyncio.Future[Outcome]
    ) -> bool:
        """Answer from the generation another request leads: False when it ended without an
        answer (its client went away), and this request must try again. A streaming follower
        gets pings while it waits, then the whole answer as a replayed stream."""
        call.cache = "shared"
        message_id = new_message_id()
        pinger = None
        if request.stream:
            pinger = Pinger(
                call, self._ping_interval, lambda: start_events(message_id, request.model)
            )
        try:
            kind, value = await asyncio.shield(flight)
        finally:
            if pinger is not None:
                await pinger.stop()
        if kind == "retry":
            return False
        if kind == "error":
            raise ProxyError(value.error_type, value.message, value.status)
        message = _decode_entry(value) or {}
        await self._answer_from_cache(call, request, message, message_id)
        return True

    async def _answer_from_cache(
        self, call: Call, request: ChatRequest, message: dict[str, Any], message_id: str = ""
    ) -> None:
        message["id"] = message_id or new_message_id()
        message["model"] = request.model
        for block in message.get("content") or ():
            if isinstance(block, dict) and block.get("type") == "tool_use":
                block["id"] = new_tool_use_id()  # ids are per answer, not shared across sessions
        usage = message.get("usage") or {}
        call.tokens = (usage.get("input_tokens", 0), usage.get("output_tokens", 0))
        if not request.stream:
            await send_body(call, 200, orjson.dumps(message))
            return
        events = replay_events(message)
        if call.response_started:  # a waiting follower's pings sent message_start already
            events = events[2:]
        else:
            headers = call.base_headers(_SSE)
            headers.append((b"cache-control", b"no-cache"))
            await start_response(call, 200, headers)
        self._metrics.ttft.observe(time.perf_counter() - call.started)
        call.response_done = True
        await call.send({"type": "http.response.body", "body": encode_events(events)})

    async def _generate(
        self,
        call: Call,
        request: ChatRequest,
        backend_model: str,
        key: str | None,
        publish: Callable[[Outcome], None] | None,
    ) -> None:
        thinking = await self._catalog.supports_thinking(backend_model)
        # Stream from Ollama when the client streams, and when stop sequences must be matched
        # as text arrives (so generation stops at the match instead of running on).
        backend_stream = request.stream or bool(request.stop_sequences)
        window = await self._context.window.for_model(self._context.backend, backend_model)
        chat = build_chat(
            request,
            backend_model,
            stream=backend_stream,
            supports_thinking=thinking,
            num_ctx=window,
        )
        assembler = ResponseAssembler(
            message_id=new_message_id(),
            model=request.model,
            stop_sequences=request.stop_sequences,
            thinking=request.thinking,
            emit=request.stream,
            input_estimate=estimate_prompt_tokens(chat),
            max_tokens=request.max_tokens,
            tools=request.tools,
        )

        final: list[bytes] = []

        def complete() -> bytes:
            """Account for the finished answer and hand it to the requests waiting for the
            same answer (the store is ``_finish``'s, with the client's last bytes)."""
            encoded = orjson.dumps(assembler.message())
            final.append(encoded)
            call.tokens = (assembler.input_tokens, assembler.output_tokens)
            self._metrics.record_tokens(assembler.input_tokens, assembler.output_tokens)
            for form in assembler.rescued:
                self._metrics.record_rescue(form)
            self._remember(key, encoded)
            if publish is not None:
                publish(("ok", encoded))
            return encoded

        # Pings for a streaming client and the first-token timeout (``backend_stream``).
        pinger = (
            Pinger(
                call,
                self._ping_interval if request.stream else None,
                assembler.start_events,
                timeout=self._first_token_timeout if backend_stream else None,
            )
            if backend_stream
            else None
        )
        reply: ChatReply | None = None
        try:
            if backend_stream:
                # The first-token timeout covers the request and the wait for the first chunk.
                try:
                    reply = await self._context.backend.chat(chat)
                except BackendError as exc:
                    raise self._backend_failed(exc, backend_model, chat) from None
                await self._relay(call, request, reply, assembler, complete, pinger, chat, key)
                if request.stream:
                    return
            else:
                try:
                    reply = await self._context.backend.chat(chat)
                    answer = await reply.json()
                except BackendError as exc:
                    raise self._backend_failed(exc, backend_model, chat) from None
                assembler.feed(answer)
                if not assembler.finished:
                    raise ProxyError("api_error", "backend ended the answer early")
                complete()
        except asyncio.CancelledError:
            if pinger is None or not pinger.timed_out():
                raise
            self._metrics.record_upstream_error("first_token_timeout")
            raise ProxyError(
                "overloaded_error",
                f"backend produced no token in {self._first_token_timeout:g} s"
                " (VASTLLM_FIRST_TOKEN_TIMEOUT)",
            ) from None
        finally:
            if reply is not None:
                reply.close()
            if pinger is not None:
                await pinger.stop()
        await self._finish(key, final[0], functools.partial(send_body, call, 200, final[0]))

    async def _relay(
        self,
        call: Call,
        request: ChatRequest,
        reply: ChatReply,
        assembler: ResponseAssembler,
        complete: Callable[[], bytes],
        pinger: Pinger | None,
        chat: dict[str, Any],
        key: str | None,
    ) -> None:
        """Relay the backend's stream as it arrives (as SSE events when the client streams).

        The SSE response starts with the first token (headers, message_start and the token in
        one write), or earlier with the first ping when the first token is slow (``Pinger``).
        The first chunk ends the first-token timeout."""
        first = True
        waiting = True

        async def deliver(events: list[Event]) -> None:
            nonlocal first
            if not request.stream:
                if assembler.finished:
                    complete()
                return
            if first and events:
                if pinger is not None:
                    await pinger.stop()
                if not call.response_started:
                    headers = call.base_headers(_SSE)
                    headers.append((b"cache-control", b"no-cache"))
                    await start_response(call, 200, headers)
                    events = assembler.start_events() + events
                self._metrics.ttft.observe(time.perf_counter() - call.started)
                first = False
            if not assembler.finished:
                if events:
                    await call.send(
                        {
                            "type": "http.response.body",
                            "body": encode_events(events),
                            "more_body": True,
                        }
                    )
                return
            # The last batch and the end (message_delta, message_stop) in one write.
            encoded = complete()
            call.response_done = True
            last = {"type": "http.response.body", "body": encode_events(events), "more_body": False}
            await self._finish(key, encoded, functools.partial(call.send, last))

        try:
            async for batch in reply.batches():
                if waiting:
                    if pinger is not None:
                        pinger.arrived()
                    waiting = False
                events: list[Event] = []
                for chunk in batch:
                    assembler.feed(chunk, events)  # one delta event per read, not per chunk
                    if assembler.finished:
                        break
                await deliver(events)
                if assembler.finished:
                    if not assembler.cut_short:
                        await reply.finish()  # keeps the connection for reuse
                    return  # cut short (stop sequence, max_tokens): closing it stops generation
        except BackendError as exc:
            too_big = self._too_long(exc, chat)  # reported inside the stream: same answer
            if too_big is not None:
                raise too_big from None
            # A reply that is not Ollama's counts as such; a cut, as a cut stream.
            kind = exc.kind if isinstance(exc, BackendBadReply) else "stream_cut"
            self._metrics.record_upstream_error(kind)
            raise mid_answer_error(exc) from None
        if not assembler.finished:
            self._metrics.record_upstream_error("stream_cut")
            raise ProxyError("api_error", "backend ended the stream before the answer was done")

    # ------------------------------------------------------------------ count_tokens
    async def count_tokens(self, call: Call) -> None:
        call.cache = "bypass"
        self._context.auth.check(call)
        request = parse_request(await read_json(call, self._max_bytes), count_only=True)
        call.model = request.model
        backend_model = await self._catalog.resolve(request.model)
        call.backend_model = backend_model
        fields = request.shaping_fields(backend_model)
        for name in _NOT_COUNTED:
            fields.pop(name)
        key = cache_key(fields, "count") if self._wants_cache(call) else None
        stored, key = await self._cache_lookup(call, key)
        if stored is not None:
            await send_body(call, 200, orjson.dumps(stored))
            return
        # Counted the way /v1/messages sends it (same num_ctx, truncate and shift off): a prompt
        # over the window is counted whole, from Ollama's refusal, and messages refuses it.
        window = await self._context.window.for_model(self._context.backend, backend_model)
        chat = build_chat(
            request,
            backend_model,
            stream=False,
            supports_thinking=False,
            num_predict=1,
            num_ctx=window,
        )
        estimate = estimate_prompt_tokens(chat)
        over: int | None = None
        try:
            reply = await self._context.backend.chat(chat)
            try:
                answer: dict[str, Any] = await reply.json()
            except BackendBadReply:
                answer = {}
            finally:
                reply.close()
        except BackendError as exc:
            found = overflow_of(exc) if isinstance(exc, BackendStatus) else None
            if found is None:
                raise self._backend_failed(exc, backend_model) from None
            over, _limit = overflow_numbers(found, window, estimate)
            answer = {}
        if over is not None:
            input_tokens = over
        else:
            count = sane_count(answer.get("prompt_eval_count"))
            if count is None:
                raise ProxyError("api_error", "backend did not report a prompt token count")
            input_tokens = prompt_tokens(count, estimate)
        body = orjson.dumps({"input_tokens": input_tokens})
        await send_body(call, 200, body)
        await self._store(key, body)
