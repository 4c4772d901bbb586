"""The proxy's routes in process: the ASGI app (lifespan included) with a fake backend and a fake
Redis, driven by httpx's ASGI transport. No subprocess, no socket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from vastllm.proxy import health
from vastllm.proxy.app import create_app
from vastllm.proxy.config import Settings
from vastllm.proxy.errors import (
    BackendBadReply,
    BackendConnectionLost,
    BackendError,
    BackendStatus,
    BackendTimeout,
    BackendUnreachable,
)

KEY = "unit-key"
MODEL = "qwen3-coder:30b"
HEADERS = {"x-api-key": KEY}
BASIC = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "hi"}],
}


# ------------------------------------------------------------------------------- doubles


def final_chunk(prompt: int = 12, generated: int = 2, reason: str = "stop") -> dict[str, Any]:
    return {
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": reason,
        "prompt_eval_count": prompt,
        "eval_count": generated,
    }


class FakeReply:
    def __init__(self, chunks: list[dict[str, Any]], *, cut: BackendError | None = None) -> None:
        self.chunks = chunks
        self.cut = cut
        self.finished = False
        self.closed = False

    async def json(self) -> dict[str, Any]:
        text = "".join(c.get("message", {}).get("content", "") for c in self.chunks)
        answer = dict(self.chunks[-1])
        answer["message"] = {"role": "assistant", "content": text}
        return answer

    async def batches(self) -> AsyncIterator[Iterator[dict[str, Any]]]:
        for chunk in self.chunks:
            yield iter([chunk])
        if self.cut is not None:
            raise self.cut

    async def finish(self) -> None:
        self.finished = True

    def close(self) -> None:
        self.closed = True


class FakeBackend:
    """``backend.Backend`` answering "Hello" in two chunks; failures on request."""

    def __init__(self) -> None:
        self.installed = [MODEL, "Llama3:8B"]
        self.loaded: list[str] = []
        self.capable: dict[str, list[str]] = {}
        self.chats: list[dict[str, Any]] = []
        self.replies: list[FakeReply] = []
        self.chat_error: BackendError | None = None
        self.cut: BackendError | None = None
        self.down: set[str] = set()  # names of the info calls that fail
        self.context_max: int | None = 262144  # /api/show <family>.context_length
        self.loaded_contexts: dict[str, int] = {}  # /api/ps context_length
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def chat(self, body: dict[str, Any]) -> FakeReply:
        self.chats.append(body)
        if self.chat_error is not None:
            raise self.chat_error
        chunks = [
            {"message": {"role": "assistant", "content": "Hel"}, "done": False},
            {"message": {"role": "assistant", "content": "lo"}, "done": False},
            final_chunk(),
        ]
        reply = FakeReply(chunks[:1] if self.cut else chunks, cut=self.cut)
        self.replies.append(reply)
        return reply

    def _check(self, call: str) -> None:
        if call in self.down:
            raise BackendUnreachable(f"{call}: connection refused")

    async def model_names(self) -> list[str]:
        self._check("model_names")
        return list(self.installed)

    async def loaded_model_names(self) -> list[str]:
        self._check("loaded_model_names")
        return list(self.loaded)

    async def version(self) -> str | None:
        self._check("version")
        return "0.12.6"

    async def capabilities(self, model: str) -> list[str]:
        self._check("capabilities")
        return self.capable.get(model, ["completion"])

    async def context_length(self, model: str) -> int | None:
        self._check("context_length")
        return self.context_max

    async def loaded_context_lengths(self) -> dict[str, int]:
        self._check("loaded_context_lengths")
        return dict(self.loaded_contexts)


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.closed = False

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ex: int) -> None:
        self.data[key] = value

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        self.closed = True


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's ASGI lifespan around an httpx client talking to it in process."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    lifespan = asyncio.create_task(app(scope, to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    assert (await from_app.get())["type"] == "lifespan.startup.complete"
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            yield client
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        assert (await from_app.get())["type"] == "lifespan.shutdown.complete"
        await lifespan


def settings(**changes: Any) -> Settings:
    values: dict[str, Any] = {
        "api_key": KEY,
        "redis_url": "",
        "model": MODEL,
        "model_map": (("claude-*haiku*", "qwen3:8b"), ("fast", "qwen2.5-coder:1.5b")),
    }
    values.update(changes)
    return Settings(**values)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def client(backend: FakeBackend) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(create_app(settings(), backend=backend)) as http:
        yield http


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        events.append((name_line.removeprefix("event: "), json.loads(data_line[len("data: ") :])))
    return events


def error_of(response: httpx.Response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["request-id"].startswith("req_")
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    return str(body["error"]["message"])


# -------------------------------------------------------------------------------- messages


async def test_lifespan_starts_and_closes_the_backend_and_redis():
    backend, redis = FakeBackend(), FakeRedis()
    app = create_app(
        settings(redis_url="redis://127.0.0.1:1/0"), backend=backend, redis_client=redis
    )
    async with serve(app) as http:
        assert backend.started
        assert (await http.get("/health/liveness")).json() == {"status": "ok"}
    assert backend.closed
    assert redis.closed


async def test_messages_non_streamed(client, backend):
    response = await client.post("/v1/messages", json=BASIC, headers=HEADERS)
    assert response.status_code == 200
    assert response.headers["x-cache"] == "bypass"  # the cache is off
    message = response.json()
    assert message["id"].startswith("msg_")
    assert message["model"] == "claude-sonnet-4-5"  # the name the client asked for
    assert message["content"] == [{"type": "text", "text": "Hello"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"] == {"input_tokens": 12, "output_tokens": 2}
    chat = backend.chats[-1]
    assert chat["model"] == MODEL
    assert chat["stream"] is False
    assert chat["options"] == {"num_predict": 50, "num_ctx": 65536}
    assert chat["truncate"] is False
    assert chat["shift"] is False
    assert "think" not in chat  # the model has no thinking capability
    assert backend.replies[-1].closed


async def test_messages_streamed(client, backend):
    response = await client.post("/v1/messages", json={**BASIC, "stream": True}, headers=HEADERS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    events = parse_sse(response.text)
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    text = "".join(e["delta"]["text"] for n, e in events if n == "content_block_delta")
    assert text == "Hello"
    assert events[-2][1]["usage"] == {"input_tokens": 12, "output_tokens": 2}
    assert backend.chats[-1]["stream"] is True
    assert backend.replies[-1].finished  # the rest was read: the connection can be reused
    assert backend.replies[-1].closed


async def test_stream_cut_mid_answer_ends_with_an_error_event(client, backend):
    backend.cut = BackendConnectionLost("reset")
    response = await client.post("/v1/messages", json={**BASIC, "stream": True}, headers=HEADERS)
    assert response.status_code == 200  # the headers went out with the first token
    events = parse_sse(response.text)
    assert events[0][0] == "message_start"
    assert events[-1] == (
        "error",
        {
            "type": "error",
            "error": {"type": "api_error", "message": "backend connection lost mid-answer"},
        },
    )
    metrics = (await client.get("/metrics", headers=HEADERS)).text
    assert 'vastllm_upstream_errors_total{kind="stream_cut"} 1' in metrics


async def test_thinking_is_sent_to_a_capable_model_only(client, backend):
    backend.capable["qwen3:8b"] = ["completion", "thinking"]
    thinking = {"type": "enabled", "budget_tokens": 1024}
    body = {**BASIC, "model": "claude-haiku-4-5", "thinking": thinking}
    assert (await client.post("/v1/messages", json=body, headers=HEADERS)).status_code == 200
    assert backend.chats[-1]["model"] == "qwen3:8b"
    assert backend.chats[-1]["think"] is True


@pytest.mark.parametrize(
    ("name", "backend_model"),
    [
        ("claude-opus-4-1", MODEL),  # claude-* -> VASTLLM_MODEL
        ("claude-3-5-haiku", "qwen3:8b"),  # the map comes first
        ("fast", "qwen2.5-coder:1.5b"),  # an alias without wildcards
        ("Qwen3-Coder:30B", MODEL),  # a configured model, by key: as configured
        ("library/qwen3-coder:30b", MODEL),
        ("qwen3:8b", "qwen3:8b"),  # a map target as is
        ("library/llama3:8b", "Llama3:8B"),  # an installed model, by key: as Ollama lists it
        ("LLAMA3:8b", "Llama3:8B"),
    ],
)
async def test_model_names_resolve_by_alias_then_by_key(client, backend, name, backend_model):
    response = await client.post("/v1/messages", json={**BASIC, "model": name}, headers=HEADERS)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == name
    assert backend.chats[-1]["model"] == backend_model


@pytest.mark.parametrize("name", ["gpt-4o", "qwen3:4b", "qwen 3", "user//model"])
async def test_unknown_model_is_404(client, backend, name):
    response = await client.post("/v1/messages", json={**BASIC, "model": name}, headers=HEADERS)
    assert name in error_of(response, 404, "not_found_error")
    assert backend.chats == []


async def test_cache_miss_then_hit_in_both_forms(backend):
    redis = FakeRedis()
    app = create_app(
        settings(redis_url="redis://127.0.0.1:1/0"), backend=backend, redis_client=redis
    )
    async with serve(app) as http:
        first = await http.post("/v1/messages", json=BASIC, headers=HEADERS)
        assert first.headers["x-cache"] == "miss"
        assert len(redis.data) == 1
        again = await http.post("/v1/messages", json={**BASIC, "stream": True}, headers=HEADERS)
        assert again.headers["x-cache"] == "hit"
        text = "".join(
            e["delta"]["text"] for n, e in parse_sse(again.text) if n == "content_block_delta"
        )
        assert text == "Hello"
        fresh = await http.post(
            "/v1/messages", json=BASIC, headers={**HEADERS, "cache-control": "no-cache"}
        )
        assert fresh.headers["x-cache"] == "bypass"
    assert len(backend.chats) == 2


async def test_answers_over_the_entry_size_are_not_cached(backend):
    """VASTLLM_CACHE_MAX_ENTRY_BYTES reaches the cache: a larger answer is served, not stored."""
    redis = FakeRedis()
    app = create_app(
        settings(redis_url="redis://127.0.0.1:1/0", cache_max_entry_bytes=64),
        backend=backend,
        redis_client=redis,
    )
    async with serve(app) as http:
        first = await http.post("/v1/messages", json=BASIC, headers=HEADERS)
        assert first.status_code == 200
        assert first.json()["content"][0]["text"] == "Hello"
        again = await http.post("/v1/messages", json=BASIC, headers=HEADERS)
        assert again.headers["x-cache"] == "miss"
    assert redis.data == {}
    assert len(backend.chats) == 2


# ------------------------------------------------------------------------------------ auth


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing API key"),
        ({"x-api-key": "wrong"}, "invalid API key"),
        ({"authorization": "Bearer wrong"}, "invalid API key"),
    ],
)
async def test_auth_401(client, backend, headers, message):
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        response = await client.post(path, json=BASIC, headers=headers)
        assert message in error_of(response, 401, "authentication_error")
        assert response.headers["x-should-retry"] == "false"
    assert error_of(await client.get("/v1/models", headers=headers), 401, "authentication_error")
    assert error_of(await client.get("/metrics", headers=headers), 401, "authentication_error")
    assert backend.chats == []


async def test_bearer_key_and_open_routes(client):
    bearer = {"authorization": f"Bearer {KEY}"}
    assert (await client.post("/v1/messages", json=BASIC, headers=bearer)).status_code == 200
    for path in ("/", "/health", "/health/liveness", "/health/readiness"):
        assert (await client.get(path)).status_code == 200, path
    assert (await client.head("/")).status_code == 200


async def test_open_metrics_opens_models_and_metrics(backend):
    async with serve(create_app(settings(open_metrics=True), backend=backend)) as http:
        assert (await http.get("/v1/models")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.post("/v1/messages", json=BASIC)).status_code == 401


# ---------------------------------------------------------------------------- count_tokens


async def test_count_tokens(client, backend):
    body = {"model": "claude-sonnet-4-5", "messages": BASIC["messages"]}
    response = await client.post("/v1/messages/count_tokens", json=body, headers=HEADERS)
    assert response.status_code == 200
    assert response.json() == {"input_tokens": 12}
    assert response.headers["x-cache"] == "bypass"
    chat = backend.chats[-1]
    assert chat["options"] == {"num_predict": 1, "num_ctx": 65536}
    assert chat["stream"] is False


async def test_count_tokens_without_a_count_is_500(client, backend):
    async def no_count() -> dict[str, Any]:
        raise BackendBadReply("bad_chunk", "backend sent malformed data")

    original = backend.chat

    async def chat(body: dict[str, Any]) -> FakeReply:
        reply = await original(body)
        reply.json = no_count  # type: ignore[method-assign]
        return reply

    backend.chat = chat
    body = {"model": "claude-sonnet-4-5", "messages": BASIC["messages"]}
    response = await client.post("/v1/messages/count_tokens", json=body, headers=HEADERS)
    assert "prompt token count" in error_of(response, 500, "api_error")


# ---------------------------------------------------------------------------------- models


async def test_models_lists_aliases_configured_and_installed_models_once(client, backend):
    backend.installed = [MODEL, "Qwen3:8B", "QWEN3-CODER:30b", "llama3:latest"]
    listing = (await client.get("/v1/models", headers=HEADERS)).json()
    ids = [model["id"] for model in listing["data"]]
    # "fast" is an alias without wildcards; the configured models sorted; then the installed
    # ones, each model once by its key (QWEN3-CODER:30b is qwen3-coder:30b, Qwen3:8B qwen3:8b)
    assert ids == ["fast", "qwen2.5-coder:1.5b", MODEL, "qwen3:8b", "llama3:latest"]
    assert listing["first_id"] == "fast"
    assert listing["last_id"] == "llama3:latest"
    assert listing["has_more"] is False
    assert all(model["type"] == "model" for model in listing["data"])
    assert all(model["display_name"] == model["id"] for model in listing["data"])


async def test_models_without_the_backend_lists_the_configured_ones(client, backend):
    backend.down.add("model_names")
    ids = [m["id"] for m in (await client.get("/v1/models", headers=HEADERS)).json()["data"]]
    assert ids == ["fast", "qwen2.5-coder:1.5b", MODEL, "qwen3:8b"]


# ---------------------------------------------------------------------------------- health


async def test_health_ok(client, backend):
    backend.loaded = ["qwen3-coder:30b"]
    health = (await client.get("/health")).json()
    assert health["status"] == "ok"
    assert health["ollama"] == {
        "reachable": True,
        "url": "http://127.0.0.1:11434",
        "version": "0.12.6",
    }
    assert health["model"] == {"name": MODEL, "present": True, "loaded": True}
    assert health["redis"] == {"enabled": False, "reachable": None}
    ready = await client.get("/health/readiness")
    assert ready.json() == {"status": "ready", "health": "ok"}


async def test_health_finds_the_model_by_key(backend):
    backend.installed = ["Qwen3-Coder:30B"]
    async with serve(
        create_app(settings(model="library/qwen3-coder:30b"), backend=backend)
    ) as http:
        assert (await http.get("/health")).json()["model"]["present"] is True


@pytest.mark.parametrize("failing", ["model_names", "loaded_model_names"])
async def test_health_degraded_when_the_backend_fails_to_list(client, backend, failing):
    backend.down.add(failing)
    response = await client.get("/health")
    assert response.status_code == 200
    health = response.json()
    if failing == "model_names":
        assert health["status"] == "degraded"
        assert health["model"]["present"] is False
        assert (await client.get("/health/readiness")).status_code == 503
    else:
        assert health["status"] == "ok"
        assert health["model"]["loaded"] is False


async def test_health_degraded_when_the_model_is_missing(client, backend):
    backend.installed = ["llama3:latest"]
    health = (await client.get("/health")).json()
    assert health["status"] == "degraded"
    assert health["model"]["present"] is False


async def test_health_down_when_the_backend_does_not_answer(client, backend):
    backend.down.update({"version", "model_names", "loaded_model_names"})
    response = await client.get("/health")
    assert response.status_code == 503
    health = response.json()
    assert health["status"] == "down"
    assert health["ollama"]["reachable"] is False
    assert "cannot reach Ollama" in health["ollama"]["error"]
    readiness = await client.get("/health/readiness")
    assert readiness.status_code == 503
    assert readiness.json() == {"status": "not_ready", "health": "down"}
    assert (await client.get("/health/liveness")).status_code == 200


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("failure", "status", "error_type", "message", "kind"),
    [
        (
            BackendStatus(404, "model not found"),
            404,
            "not_found_error",
            "not available",
            "http_404",
        ),
        (BackendStatus(503, "busy"), 529, "overloaded_error", "overloaded: busy", "http_503"),
        (BackendStatus(400, "no tools"), 400, "invalid_request_error", "no tools", "http_400"),
        (BackendStatus(500, "boom"), 500, "api_error", "(HTTP 500): boom", "http_500"),
        (BackendUnreachable("refused"), 529, "overloaded_error", "unreachable", "connect"),
        (BackendTimeout("slow"), 529, "overloaded_error", "timed out", "timeout"),
        (
            BackendConnectionLost("reset"),
            529,
            "overloaded_error",
            "connection failed",
            "connection_lost",
        ),
    ],
)
async def test_backend_failures_map_to_anthropic_errors(
    client, backend, failure, status, error_type, message, kind
):
    backend.chat_error = failure
    for stream in (False, True):
        response = await client.post(
            "/v1/messages", json={**BASIC, "stream": stream}, headers=HEADERS
        )
        assert message in error_of(response, status, error_type)
    metrics = (await client.get("/metrics", headers=HEADERS)).text
    assert f'vastllm_upstream_errors_total{{kind="{kind}"}} 2' in metrics


async def test_request_errors_have_the_anthropic_shape(client):
    malformed = await client.post(
        "/v1/messages",
        content=b'{"model": ',
        headers={**HEADERS, "content-type": "application/json"},
    )
    assert "malformed JSON" in error_of(malformed, 400, "invalid_request_error")
    assert malformed.headers["x-cache"] == "bypass"
    invalid = await client.post(
        "/v1/messages", json={**BASIC, "max_tokens": "lots"}, headers=HEADERS
    )
    assert error_of(invalid, 400, "invalid_request_error").startswith("max_tokens:")
    assert "no route" in error_of(await client.get("/v2/nothing"), 404, "not_found_error")
    assert "not allowed" in error_of(await client.get("/v1/messages"), 405, "invalid_request_error")
    assert (await client.get("/health/")).status_code == 200  # a trailing slash is the same path


async def test_request_too_large(backend):
    async with serve(create_app(settings(max_request_bytes=1000), backend=backend)) as http:
        body = {**BASIC, "messages": [{"role": "user", "content": "x" * 2000}]}
        response = await http.post("/v1/messages", json=body, headers=HEADERS)
        assert "exceeds 1000 bytes" in error_of(response, 413, "request_too_large")
    assert backend.chats == []


async def test_unexpected_error_is_a_500_without_details(client, backend):
    async def broken(body: dict[str, Any]) -> FakeReply:
        raise RuntimeError("secret internals")

    backend.chat = broken
    response = await client.post("/v1/messages", json=BASIC, headers=HEADERS)
    assert error_of(response, 500, "api_error") == "internal proxy error"
    assert "secret" not in response.text


async def test_requests_are_counted_by_route_and_status(client):
    await client.post("/v1/messages", json=BASIC, headers=HEADERS)
    await client.post("/v1/messages", json=BASIC)
    metrics = (await client.get("/metrics", headers=HEADERS)).text
    assert 'vastllm_requests_total{route="messages",status="200"} 1' in metrics
    assert 'vastllm_requests_total{route="messages",status="401"} 1' in metrics


# ------------------------------------------------------------- issue 8: the request path


class SlowBackend(FakeBackend):
    """Waits ``delay`` s before answering (forever when None); ``endless``: text chunks without
    end; ``final``: the last chunk's fields."""

    def __init__(self, delay: float | None = 0.0, *, endless: bool = False, **final: Any):
        super().__init__()
        self.delay = delay
        self.endless = endless
        self.final = final

    async def chat(self, body: dict[str, Any]) -> FakeReply:
        self.chats.append(body)
        if self.delay is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay)
        if self.endless:
            reply: FakeReply = EndlessReply([])
        else:
            reply = FakeReply(
                [
                    {"message": {"role": "assistant", "content": "Hel"}, "done": False},
                    {"message": {"role": "assistant", "content": "lo"}, "done": False},
                    {**final_chunk(), **self.final},
                ]
            )
        self.replies.append(reply)
        return reply


class EndlessReply(FakeReply):
    async def batches(self) -> AsyncIterator[Iterator[dict[str, Any]]]:
        while not self.closed:
            yield iter([{"message": {"role": "assistant", "content": "la"}, "done": False}])
            await asyncio.sleep(0)


async def test_identical_requests_in_flight_make_one_generation():
    backend = SlowBackend(0.2)
    app = create_app(settings(redis_url="redis://cache"), backend=backend, redis_client=FakeRedis())
    async with serve(app) as http:
        streamed = {**BASIC, "stream": True}
        answers = await asyncio.gather(
            *(
                http.post("/v1/messages", json=streamed if n % 2 else BASIC, headers=HEADERS)
                for n in range(50)
            )
        )
        assert len(backend.chats) == 1
        texts, ids = set(), set()
        for n, answer in enumerate(answers):
            assert answer.status_code == 200
            if n % 2:
                events = parse_sse(answer.text)
                assert events[0][0] == "message_start"
                assert events[-1][0] == "message_stop"
                texts.add("".join(e["delta"].get("text", "") for _, e in events if "delta" in e))
                ids.add(events[0][1]["message"]["id"])
            else:
                texts.add(answer.json()["content"][0]["text"])
                ids.add(answer.json()["id"])
        assert texts == {"Hello"}
        assert len(ids) == 50  # one message id per answer
        assert sorted(a.headers["x-cache"] for a in answers).count("miss") == 1
        # afterwards: a hit, still one generation
        again = await http.post("/v1/messages", json=BASIC, headers=HEADERS)
        assert again.headers["x-cache"] == "hit"
        assert len(backend.chats) == 1


async def test_followers_share_the_leaders_error():
    backend = SlowBackend(0.1)
    backend.chat_error = None
    app = create_app(
        settings(redis_url="redis://cache", first_token_timeout=0.3),
        backend=SlowBackend(None),
        redis_client=FakeRedis(),
    )
    async with serve(app) as http:
        request = {**BASIC, "stop_sequences": ["zz"]}  # streamed from the backend
        answers = await asyncio.gather(
            *(http.post("/v1/messages", json=request, headers=HEADERS) for _ in range(5))
        )
    for answer in answers:
        assert "VASTLLM_FIRST_TOKEN_TIMEOUT" in error_of(answer, 529, "overloaded_error")


async def test_streaming_clients_get_pings_until_the_first_token():
    backend = SlowBackend(0.45)
    app = create_app(settings(ping_interval=0.1), backend=backend)
    async with serve(app) as http:
        response = await http.post("/v1/messages", json={**BASIC, "stream": True}, headers=HEADERS)
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    assert names[0] == "message_start"
    pings = names[: names.index("content_block_start")].count("ping")
    assert 3 <= pings <= 6, names
    assert names[-1] == "message_stop"
    assert "".join(e["delta"].get("text", "") for _, e in events if "delta" in e) == "Hello"


async def test_a_hung_generation_ends_at_the_first_token_timeout():
    backend = SlowBackend(None)
    app = create_app(settings(ping_interval=0.1, first_token_timeout=0.35), backend=backend)
    async with serve(app) as http:
        streamed = await http.post("/v1/messages", json={**BASIC, "stream": True}, headers=HEADERS)
        events = parse_sse(streamed.text)
        assert streamed.status_code == 200
        assert [name for name, _ in events][:2] == ["message_start", "ping"]
        assert events[-1] == (
            "error",
            {
                "type": "error",
                "error": {
                    "type": "overloaded_error",
                    "message": "backend produced no token in 0.35 s (VASTLLM_FIRST_TOKEN_TIMEOUT)",
                },
            },
        )
    # before the first ping, the timeout is an HTTP error
    app = create_app(settings(ping_interval=5, first_token_timeout=0.2), backend=backend)
    async with serve(app) as http:
        for request in ({**BASIC, "stream": True}, {**BASIC, "stop_sequences": ["x"]}):
            answer = await http.post("/v1/messages", json=request, headers=HEADERS)
            error_of(answer, 529, "overloaded_error")
        metrics = (await http.get("/metrics", headers=HEADERS)).text
    assert 'vastllm_upstream_errors_total{kind="first_token_timeout"} 2' in metrics


@pytest.mark.parametrize("stream", [True, False])
async def test_an_endless_backend_stream_stops_at_max_tokens(stream):
    backend = SlowBackend(endless=True)
    request = {**BASIC, "max_tokens": 7, "stream": stream, "stop_sequences": ["STOP"]}
    async with serve(create_app(settings(), backend=backend)) as http:
        async with asyncio.timeout(5):
            answer = await http.post("/v1/messages", json=request, headers=HEADERS)
    assert answer.status_code == 200
    if stream:
        events = parse_sse(answer.text)
        delta = next(e for name, e in events if name == "message_delta")
        assert delta["delta"]["stop_reason"] == "max_tokens"
        assert delta["usage"]["output_tokens"] == 7
        text = "".join(e["delta"].get("text", "") for _, e in events if "delta" in e)
    else:
        assert answer.json()["stop_reason"] == "max_tokens"
        assert answer.json()["usage"]["output_tokens"] == 7
        text = answer.json()["content"][0]["text"]
    assert text == "la" * 7
    assert backend.replies[0].closed
    assert not backend.replies[0].finished


async def test_backend_usage_numbers_are_sanitized():
    backend = SlowBackend(eval_count=-7, prompt_eval_count=-3)
    async with serve(create_app(settings(), backend=backend)) as http:
        answer = await http.post("/v1/messages", json={**BASIC, "stream": True}, headers=HEADERS)
    usage = next(e for name, e in parse_sse(answer.text) if name == "message_delta")["usage"]
    assert usage == {"input_tokens": 0, "output_tokens": 2}  # the estimate; the chunks counted


@pytest.mark.parametrize("depth", [65, 250, 600, 1015, 1100])
@pytest.mark.parametrize("where", ["input_schema", "tool_use"])
async def test_deep_json_is_a_400_naming_the_limit(client, backend, depth, where):
    nested = "NESTED"  # written as text below: json.dumps itself stops near 1,000 levels
    request: dict[str, Any] = {**BASIC}
    if where == "input_schema":
        request["tools"] = [{"name": "t", "input_schema": nested}]
    else:
        request["messages"] = [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": nested}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]},
        ]
    raw = json.dumps(request).replace('"NESTED"', '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1))
    answer = await client.post(
        "/v1/messages", content=raw, headers={**HEADERS, "content-type": "application/json"}
    )
    message = error_of(answer, 400, "invalid_request_error")
    if depth < 1020:
        assert "JSON nested deeper than 64 levels (the limit is 64)" in message
    else:  # past the parser's own limit (1,024 levels, the whole body)
        assert "depth limit exceeded" in message
    assert backend.chats == []


async def test_deep_json_at_the_limit_is_answered(client, backend):
    nested: Any = {}
    for _ in range(63):
        nested = {"a": nested}
    request = {**BASIC, "tools": [{"name": "t", "input_schema": nested}]}
    answer = await client.post("/v1/messages", json=request, headers=HEADERS)
    assert answer.status_code == 200


async def test_x_api_key_is_trimmed_like_a_bearer_value(client):
    answer = await client.post("/v1/messages", json=BASIC, headers={"x-api-key": f" {KEY}\t"})
    assert answer.status_code == 200


async def test_a_ping_started_follower_gets_the_leaders_message_start():
    """A streaming follower whose pings start its stream sends the same message_start as the
    leader (type, role, stop_reason, stop_sequence, usage), only its own id; the SDK's types
    accept it and its accumulated message equals the leader's."""
    from anthropic.types import Message, RawMessageStartEvent

    backend = SlowBackend(0.45)
    app = create_app(
        settings(redis_url="redis://cache", ping_interval=0.1),
        backend=backend,
        redis_client=FakeRedis(),
    )
    streamed = {**BASIC, "stream": True}
    async with serve(app) as http:
        leader = asyncio.create_task(http.post("/v1/messages", json=streamed, headers=HEADERS))
        await asyncio.sleep(0.05)
        follower = await http.post("/v1/messages", json=streamed, headers=HEADERS)
        leader_answer = await leader
    assert len(backend.chats) == 1
    assert follower.headers["x-cache"] == "shared"
    starts = []
    for answer in (leader_answer, follower):
        events = parse_sse(answer.text)
        names = [name for name, _ in events]
        assert names[:2] == ["message_start", "ping"]
        assert names[: names.index("content_block_start")].count("ping") >= 2  # ping-started
        RawMessageStartEvent.model_validate(events[0][1])
        start = events[0][1]["message"]
        starts.append({key: value for key, value in start.items() if key != "id"})
        # What a client accumulates: message_start, then the blocks, then message_delta.
        message = dict(start)
        content: list[dict[str, Any]] = []
        for name, data in events:
            if name == "content_block_start":
                content.append(dict(data["content_block"]))
            elif name == "content_block_delta":
                content[data["index"]]["text"] += data["delta"]["text"]
            elif name == "message_delta":
                message.update(data["delta"])
                message["usage"] = {**message["usage"], **data["usage"]}
        message["content"] = content
        final = Message.model_validate(message)
        assert (final.type, final.role, final.stop_reason) == ("message", "assistant", "end_turn")
        assert final.content[0].text == "Hello"
    assert starts[0] == starts[1]
    assert set(starts[0]) == {
        "type",
        "role",
        "model",
        "content",
        "stop_reason",
        "stop_sequence",
        "usage",
    }


class CountingBackend(FakeBackend):
    """FakeBackend counting its info calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}

    def _check(self, call: str) -> None:
        self.calls[call] = self.calls.get(call, 0) + 1
        super()._check(call)


class CountingRedis(FakeRedis):
    def __init__(self) -> None:
        super().__init__()
        self.pings = 0

    async def ping(self) -> bool:
        self.pings += 1
        return True


async def test_rapid_health_calls_do_not_fan_out_to_the_backend():
    """/health is open to anyone: 200 rapid calls (concurrent and one after another, across
    /health and /health/readiness) cost a bounded number of backend and Redis calls: the probe
    results are shared for a short time, the model's window is learned once."""
    backend = CountingBackend()
    redis = CountingRedis()
    app = create_app(settings(redis_url="redis://cache"), backend=backend, redis_client=redis)
    async with serve(app) as http:
        started = time.monotonic()
        answers = await asyncio.gather(*(http.get("/health") for _ in range(100)))
        for n in range(100):
            answers.append(await http.get("/health/readiness" if n % 2 else "/health"))
        elapsed = time.monotonic() - started
    assert all(answer.status_code == 200 for answer in answers)
    assert answers[-2].json()["status"] == "ok"
    windows = 2 + int(elapsed / health.PROBE_TTL)  # probe rounds the time allows, at most
    for name in ("version", "model_names", "loaded_model_names", "loaded_context_lengths"):
        assert backend.calls[name] <= windows, (name, backend.calls, elapsed)
    assert redis.pings <= windows, redis.pings
    assert backend.calls["context_length"] <= 2  # startup's check, and at most one from /health


async def test_health_sees_a_change_after_the_probe_ttl(monkeypatch):
    monkeypatch.setattr(health, "PROBE_TTL", 0.05)
    backend = CountingBackend()
    app = create_app(settings(), backend=backend)
    async with serve(app) as http:
        assert (await http.get("/health")).json()["status"] == "ok"
        backend.down.add("version")
        await asyncio.sleep(0.1)
        assert (await http.get("/health")).json()["status"] == "down"


class LingeringReply(FakeReply):
    """A streamed reply whose end (``finish``) waits: Ollama's connection still open after
    the final chunk."""

    def __init__(self, chunks: list[dict[str, Any]], release: asyncio.Event) -> None:
        super().__init__(chunks)
        self.release = release

    async def finish(self) -> None:
        await self.release.wait()
        self.finished = True


async def test_a_request_arriving_after_the_answer_is_done_never_generates_again():
    """The answer is in the cache before the requests waiting for it are released: an
    identical request that arrives in between (here while the leader still reads the end of
    Ollama's stream) is a hit, not a second generation."""
    backend, release = FakeBackend(), asyncio.Event()
    original = backend.chat

    async def chat(body: dict[str, Any]) -> FakeReply:
        reply = await original(body)
        return LingeringReply(reply.chunks, release)

    backend.chat = chat  # type: ignore[method-assign]
    app = create_app(settings(redis_url="redis://cache"), backend=backend, redis_client=FakeRedis())
    request = {**BASIC, "stop_sequences": ["never"]}  # streamed from Ollama, answered whole
    async with serve(app) as http:
        leader = asyncio.create_task(http.post("/v1/messages", json=request, headers=HEADERS))
        while not backend.chats or not app_flights_empty(app):
            await asyncio.sleep(0.01)
        try:  # a second generation would wait for the release like the first: no answer
            second = await asyncio.wait_for(
                http.post("/v1/messages", json=request, headers=HEADERS), 5
            )
        finally:
            release.set()
        first = await leader
    assert first.status_code == 200
    assert second.status_code == 200
    assert second.headers["x-cache"] == "hit"
    assert len(backend.chats) == 1
    assert second.json()["content"] == first.json()["content"]


def app_flights_empty(app: Any) -> bool:
    """Whether the app's single-flight table is empty (the leader has published)."""
    _name, handler = app._routes[("POST", "/v1/messages")]
    return not handler.__self__._flights
