"""The port's guard (server.py) without sockets: body caps per route, HEAD, JSON
for whatever the app leaves unanswered; the connection cap against the file limit; the cache's
entry size limit."""

from __future__ import annotations

import asyncio
import json
import resource
from typing import Any

import pytest

from vastllm.proxy import server
from vastllm.proxy.cache import MAX_ENTRY_BYTES, AnswerCache
from vastllm.proxy.config import Settings, load_settings
from vastllm.proxy.server import GuardApp, connection_cap, error_response, protocol_class


class Recorder:
    """An ASGI app that records what it received and answers 200 with the body's length."""

    def __init__(self, *, fail: bool = False, silent: bool = False) -> None:
        self.scope: dict[str, Any] | None = None
        self.messages: list[dict[str, Any]] = []
        self.fail = fail
        self.silent = silent

    async def __call__(self, scope, receive, send) -> None:
        self.scope = scope
        message = await receive()
        self.messages.append(message)
        if self.fail:
            raise RuntimeError("boom")
        if self.silent:
            return
        body = json.dumps({"got": len(message.get("body", b""))}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]] = ()) -> dict:
    return {"type": "http", "method": method, "path": path, "headers": list(headers)}


async def run(
    app: Any, scope: dict, chunks: list[bytes], *, stall: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """Feed ``chunks`` as the request body (then stall forever if ``stall``); collect the
    answer."""
    queue = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1 or stall}
        for i, chunk in enumerate(chunks)
    ] or [{"type": "http.request", "body": b"", "more_body": stall}]
    sent: list[dict] = []

    async def receive():
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, body


def guard(app: Any, **settings: Any) -> GuardApp:
    return GuardApp(app, Settings(**settings))


def error_of(body: bytes) -> dict:
    data = json.loads(body)
    assert data["type"] == "error"
    return data["error"]


async def test_messages_routes_take_large_bodies_others_small_ones():
    app = Recorder()
    guarded = guard(app, max_request_bytes=1000, max_other_body_bytes=10)
    for path in ("/v1/messages", "/v1/messages/", "/v1/messages/count_tokens"):
        status, _, body = await run(guarded, http_scope("POST", path), [b"x" * 600, b"y" * 400])
        assert (status, json.loads(body)) == (200, {"got": 1000}), path
        status, headers, body = await run(guarded, http_scope("POST", path), [b"x" * 1001])
        assert status == 413
        assert headers["connection"] == "close"
        assert error_of(body) == {
            "type": "request_too_large",
            "message": "request body exceeds 1000 bytes",
        }
    status, _, body = await run(guarded, http_scope("GET", "/health"), [b"x" * 11])
    assert status == 413
    assert "10 bytes" in error_of(body)["message"]
    assert (await run(guarded, http_scope("GET", "/health"), [b"x" * 10]))[0] == 200


async def test_a_declared_length_over_the_cap_is_refused_before_reading():
    app = Recorder()
    scope = http_scope("POST", "/v1/messages", [(b"content-length", b"1001")])
    status, _, body = await run(guard(app, max_request_bytes=1000), scope, [], stall=True)
    assert status == 413
    assert error_of(body)["type"] == "request_too_large"
    assert app.scope is None  # the app never ran


async def test_the_body_reaches_the_app_as_one_message_then_the_real_receive():
    app = Recorder()
    await run(guard(app), http_scope("POST", "/v1/messages"), [b"ab", b"cd", b"ef"])
    assert app.messages == [{"type": "http.request", "body": b"abcdef", "more_body": False}]


async def test_head_is_served_as_get():
    app = Recorder()
    status, _, _ = await run(guard(app), http_scope("HEAD", "/health"), [])
    assert status == 200
    assert app.scope is not None
    assert app.scope["method"] == "GET"


async def test_an_escaping_exception_or_no_answer_is_a_json_500(caplog):
    for app in (Recorder(fail=True), Recorder(silent=True)):
        status, headers, body = await run(guard(app), http_scope("GET", "/"), [])
        assert status == 500
        assert headers["content-type"] == "application/json"
        assert error_of(body) == {"type": "api_error", "message": "internal proxy error"}


async def test_a_disconnect_during_the_body_reaches_the_app():
    app = Recorder(silent=True)
    sent: list[dict] = []
    queue = [
        {"type": "http.request", "body": b"x", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive():
        return queue.pop(0)

    async def send(message):
        sent.append(message)

    await guard(app)(http_scope("POST", "/v1/messages"), receive, send)
    assert app.messages == [{"type": "http.disconnect"}]


async def test_lifespan_passes_through():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    await guard(app)({"type": "lifespan"}, None, None)
    assert seen == ["lifespan"]


def test_error_response_is_complete_json_and_closes():
    raw = error_response(431, "invalid_request_error", "request headers exceed 10 bytes")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert b"content-type: application/json" in head
    assert b"connection: close" in head
    assert b"request-id: req_" in head
    assert f"content-length: {len(body)}".encode() in head
    assert error_of(body)["message"] == "request headers exceed 10 bytes"


def test_protocol_class_carries_the_limits():
    settings = Settings(header_timeout=3.5, max_header_bytes=1234, max_connections=77)
    cls = protocol_class(settings)
    assert issubclass(cls, server.GuardedProtocol)
    assert (cls.header_timeout, cls.max_header_bytes, cls.max_connections) == (3.5, 1234, 77)


def test_connection_cap_fits_the_file_limit(monkeypatch):
    limits = {"soft": 1024, "hard": 1024}

    def getrlimit(_which):
        return limits["soft"], limits["hard"]

    def setrlimit(_which, value):
        limits["soft"] = value[0]

    monkeypatch.setattr(resource, "getrlimit", getrlimit)
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert connection_cap(Settings(max_connections=10000)) == 512  # half kept in reserve
    limits.update(soft=1024, hard=100000)
    assert connection_cap(Settings(max_connections=10000)) == 10000
    assert limits["soft"] >= 10000 + 256  # raised towards the hard limit


def test_new_limits_are_settings_with_documented_defaults():
    s = load_settings([], {})
    assert (s.header_timeout, s.keepalive_timeout, s.body_timeout) == (10.0, 75.0, 30.0)
    assert (s.max_header_bytes, s.max_other_body_bytes) == (65536, 65536)
    assert (s.max_connections, s.cache_max_entry_bytes) == (10000, MAX_ENTRY_BYTES)
    env = {
        "VASTLLM_HEADER_TIMEOUT": "2.5",
        "VASTLLM_MAX_CONNECTIONS": "300",
        "VASTLLM_CACHE_MAX_ENTRY_BYTES": "4096",
    }
    s = load_settings([], env)
    assert (s.header_timeout, s.max_connections, s.cache_max_entry_bytes) == (2.5, 300, 4096)


@pytest.mark.parametrize(
    "name", ["HEADER_TIMEOUT", "MAX_HEADER_BYTES", "MAX_CONNECTIONS", "BODY_TIMEOUT"]
)
def test_bad_limits_name_the_variable(name):
    from vastllm.proxy.config import ConfigError

    with pytest.raises(ConfigError, match="VASTLLM_" + name):
        load_settings([], {"VASTLLM_" + name: "0"})


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def set(self, key: str, value: bytes, ex: int) -> None:
        self.data[key] = value

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)


async def test_answers_over_the_entry_limit_are_not_cached():
    redis = FakeRedis()
    cache = AnswerCache(redis, ttl=60, max_entry_bytes=1000)
    assert await cache.put("small", b"x" * 1000) is True
    assert await cache.put("large", b"x" * 1001) is False
    assert set(redis.data) == {"small"}
    assert cache.memory.get("large") is None
    assert cache.too_large == 1
    assert AnswerCache(redis, ttl=60).max_entry_bytes == 1024 * 1024


# --------------------------------------------------------------------------- key before body


class CountingReceive:
    """A request body of ``size`` bytes in 1 MiB chunks; counts the reads."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.reads = 0

    async def __call__(self) -> dict:
        self.reads += 1
        if self.left <= 0:
            await asyncio.sleep(3600)
        chunk = min(self.left, 1 << 20)
        self.left -= chunk
        return {"type": "http.request", "body": b"x" * chunk, "more_body": self.left > 0}


class KeyedApp:
    """Answers 401 like the routes do (before reading the body) unless the key is right."""

    def __init__(self, key: str) -> None:
        from vastllm.proxy.auth import KeyCheck

        self.check = KeyCheck(key)
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        if not self.check.accepts(scope["headers"]):
            body = b'{"type":"error","error":{"type":"authentication_error","message":"no"}}'
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        message = await receive()
        self.bodies.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"x-api-key", b"wrong")],
        [(b"authorization", b"Bearer wrong")],
        [(b"authorization", b"Basic secret-key")],
        [(b"x-api-key", b"wrong"), (b"authorization", b"Bearer secret-key")],
    ],
    ids=["none", "wrong-x-api-key", "wrong-bearer", "not-bearer", "x-api-key-wins"],
)
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
async def test_a_large_body_without_the_key_is_never_read(headers, path):
    """20 MiB posted without the right key: 401 from the app, not one read of the body (today
    the guard buffered up to max_request_bytes before the key was looked at)."""
    app = KeyedApp("secret-key")
    receive = CountingReceive(20 << 20)
    declared = [(b"content-length", str(20 << 20).encode()), *headers]
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(
        guard(app, api_key="secret-key")(http_scope("POST", path, declared), receive, send), 5
    )
    assert sent[0]["status"] == 401
    assert receive.reads == 0
    assert app.bodies == []


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-api-key", b"  secret-key \t")],
        [(b"authorization", b"bearer  secret-key ")],
        [(b"authorization", b"Bearer secret-key")],
    ],
)
async def test_a_body_with_the_key_is_read_whole(headers):
    app = KeyedApp("secret-key")
    receive = CountingReceive(3 << 20)
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    await guard(app, api_key="secret-key")(
        http_scope("POST", "/v1/messages", headers), receive, send
    )
    assert sent[0]["status"] == 200
    assert [len(body) for body in app.bodies] == [3 << 20]


async def test_without_the_key_an_app_that_reads_gets_the_small_cap_only():
    """Should a route read the body of a key-less request after all, it gets no more than
    max_other_body_bytes: the guard answers 413 and the app sees a disconnect."""
    app = Recorder(silent=True)
    status, headers, body = await run(
        guard(app, api_key="k", max_other_body_bytes=100),
        http_scope("POST", "/v1/messages"),
        [b"x" * 60, b"y" * 60],
    )
    assert status == 413
    assert headers["connection"] == "close"
    assert app.messages == [{"type": "http.disconnect"}]
    app = Recorder()
    status, _, body = await run(
        guard(app, api_key="k", max_other_body_bytes=100),
        http_scope("POST", "/v1/messages"),
        [b"x" * 60, b"y" * 40],
    )
    assert (status, json.loads(body)) == (200, {"got": 100})


class FakeTransport:
    """What a protocol writes, in order; enough of asyncio.Transport for uvicorn."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.eof = False

    def write(self, data: bytes) -> None:
        if self.eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        self.writes.append(bytes(data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, *args: Any, **kwargs: Any) -> None:
        pass


async def answer_get(scope, receive, send) -> None:
    await receive()
    headers = [(b"x-a", b"1"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


def guarded_protocol(app: Any, transport: FakeTransport) -> Any:
    import uvicorn
    from uvicorn.server import ServerState

    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
    config.load()
    protocol = protocol_class(Settings())(config, ServerState(), {})
    protocol.connection_made(transport)
    return protocol


async def test_the_response_head_goes_out_with_the_body_in_one_write():
    transport = FakeTransport()
    protocol = guarded_protocol(answer_get, transport)
    protocol.data_received(b"GET /x HTTP/1.1\r\nhost: p\r\n\r\n")
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"x-a: 1" in head
    assert body == b"{}"


async def test_a_head_answer_goes_out_before_an_error_on_the_same_connection():
    """An answer to HEAD has no body write to carry its held head: when the next request on
    the connection is malformed before the loop's next turn, the head still goes out first
    (it used to come after the 400, or not at all once the 400 had half-closed the socket)."""
    transport = FakeTransport()
    protocol = guarded_protocol(answer_get, transport)
    protocol.data_received(b"HEAD /x HTTP/1.1\r\nhost: p\r\n\r\n")
    cycle = protocol.cycle
    while not cycle.response_complete:  # the app answers; the head is held for the next turn
        await asyncio.sleep(0)
    assert transport.writes == []
    protocol.data_received(b"\x00garbage\r\n\r\n")
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(transport.writes) == 2, transport.writes
    assert transport.writes[0].startswith(b"HTTP/1.1 200")
    assert b"x-a: 1" in transport.writes[0]
    assert transport.writes[1].startswith(b"HTTP/1.1 400")


class TlsLikeTransport(FakeTransport):
    """A transport that cannot half-close (TLS)."""

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError


async def test_an_error_answer_on_a_transport_that_cannot_half_close_is_sent_then_closed():
    for transport in (TlsLikeTransport(), FakeTransport()):
        protocol = guarded_protocol(answer_get, transport)
        protocol.data_received(b"\x00garbage\r\n\r\n")
        assert len(transport.writes) == 1
        assert transport.writes[0].startswith(b"HTTP/1.1 400")
        if isinstance(transport, TlsLikeTransport):
            assert transport.closed  # a plain close at once
            assert not transport.eof
        else:
            assert transport.eof  # a lingering close: FIN now, close later
            assert not transport.closed
