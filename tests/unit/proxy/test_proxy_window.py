"""The context window: Ollama's "does not fit" errors → Anthropic's `prompt is too long`, the
fields sent with every chat, count_tokens agreeing, and the /health field."""

from __future__ import annotations

import json

import pytest
from test_proxy_routes import BASIC, HEADERS, MODEL, FakeBackend, serve, settings

from vastllm.proxy.app import create_app
from vastllm.proxy.errors import BackendBadReply, BackendStatus
from vastllm.proxy.translate_request import build_chat, parse_request
from vastllm.proxy.window import overflow_numbers, parse_overflow

LLAMA_SERVER = json.dumps(
    {
        "error": {
            "code": 400,
            "message": "request (9200 tokens) exceeds the available context size (4096 tokens),"
            " try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 9200,
            "n_ctx": 4096,
        }
    },
    separators=(",", ":"),
)
SHIFT_OFF = (
    "the prompt is longer than the context length currently available to the model; shorten the"
    " prompt, adjust the context length in settings, or use a model with a longer context length"
)


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        (LLAMA_SERVER, (9200, 4096)),
        (
            "request (5000 tokens) exceeds the available context size (2048 tokens),"
            " try increasing it",
            (5000, 2048),
        ),
        (SHIFT_OFF, (None, None)),
        ("the input length exceeds the context length", (None, None)),
        ('{"error":{"code":400,"message":"x","type":"exceed_context_size_error"}}', (None, None)),
        ("model requires more system memory (12 GiB) than is available", None),
        ('{"error":{"code":400,"message":"invalid grammar"}}', None),
        ("", None),
    ],
)
def test_ollama_overflow_errors_are_recognized(detail, expected):
    assert parse_overflow(detail) == expected


def test_numbers_reported_when_ollama_gives_none():
    assert overflow_numbers((9200, 4096), 2048, 10) == (9200, 4096)
    assert overflow_numbers((None, None), 2048, 10) == (2049, 2048)  # more than the window
    assert overflow_numbers((None, None), 2048, 5000) == (5000, 2048)  # the proxy's estimate


def test_every_chat_carries_the_window_with_truncation_and_shift_off():
    request = parse_request(BASIC)
    chat = build_chat(request, MODEL, stream=True, supports_thinking=False, num_ctx=2048)
    assert chat["options"] == {"num_predict": 50, "num_ctx": 2048}
    assert chat["truncate"] is False
    assert chat["shift"] is False
    assert "truncate" not in build_chat(request, MODEL, stream=True, supports_thinking=False)


class TooLong(FakeBackend):
    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__()
        self.chat_error = BackendStatus(status, detail)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("detail", "message"),
    [
        (LLAMA_SERVER, "prompt is too long: 9200 tokens > 4096 maximum"),
        (SHIFT_OFF, "prompt is too long: 2049 tokens > 2048 maximum"),
    ],
)
async def test_a_prompt_over_the_window_is_anthropics_400(stream, detail, message):
    backend = TooLong(detail)
    async with serve(create_app(settings(context_window=2048), backend=backend)) as http:
        response = await http.post(
            "/v1/messages", json={**BASIC, "stream": stream}, headers=HEADERS
        )
        metrics = (await http.get("/metrics", headers=HEADERS)).text
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")  # no stream started
    assert response.json()["error"] == {"type": "invalid_request_error", "message": message}
    assert backend.chats[-1]["options"]["num_ctx"] == 2048
    assert 'vastllm_upstream_errors_total{kind="prompt_too_long"} 1' in metrics


async def test_an_overflow_reported_inside_the_stream_is_the_same_error():
    class InStream(FakeBackend):
        async def chat(self, body):
            reply = await super().chat(body)
            reply.chunks = []
            reply.cut = BackendBadReply("stream_error", LLAMA_SERVER)
            return reply

    async with serve(create_app(settings(), backend=InStream())) as http:
        response = await http.post("/v1/messages", json={**BASIC, "stream": True}, headers=HEADERS)
    assert "prompt is too long: 9200 tokens > 4096 maximum" in response.text


async def test_other_backend_400s_are_not_a_long_prompt():
    backend = TooLong("invalid options")
    async with serve(create_app(settings(), backend=backend)) as http:
        response = await http.post("/v1/messages", json=BASIC, headers=HEADERS)
    assert response.status_code == 400
    assert "prompt is too long" not in response.json()["error"]["message"]


async def test_count_tokens_counts_a_prompt_over_the_window_as_messages_refuses_it():
    backend = TooLong(LLAMA_SERVER)
    body = {"model": "claude-sonnet-4-5", "messages": BASIC["messages"]}
    async with serve(create_app(settings(context_window=4096), backend=backend)) as http:
        counted = await http.post("/v1/messages/count_tokens", json=body, headers=HEADERS)
        refused = await http.post("/v1/messages", json=BASIC, headers=HEADERS)
    assert counted.status_code == 200
    assert counted.json() == {"input_tokens": 9200}
    assert refused.json()["error"]["message"] == "prompt is too long: 9200 tokens > 4096 maximum"
    count_chat, message_chat = backend.chats
    for name in ("truncate", "shift"):
        assert count_chat[name] is message_chat[name] is False
    assert count_chat["options"]["num_ctx"] == message_chat["options"]["num_ctx"] == 4096


async def test_the_model_caps_the_window_and_health_says_so():
    backend = FakeBackend()
    backend.context_max = 32768
    backend.loaded = [MODEL]
    backend.loaded_contexts = {MODEL: 4096}
    async with serve(create_app(settings(context_window=65536), backend=backend)) as http:
        await http.post("/v1/messages", json=BASIC, headers=HEADERS)
        health = (await http.get("/health")).json()
    assert backend.chats[-1]["options"]["num_ctx"] == 32768
    window = health["context_window"]
    assert window["served"] == 32768
    assert window["configured"] == 65536
    assert window["model_max"] == 32768
    assert window["loaded"] == 4096
    assert len(window["warnings"]) == 2
    assert health["status"] == "ok"


async def test_without_an_answer_from_ollama_the_configured_window_is_used():
    backend = FakeBackend()
    backend.down = {"context_length", "loaded_context_lengths"}
    async with serve(create_app(settings(context_window=8192), backend=backend)) as http:
        await http.post("/v1/messages", json=BASIC, headers=HEADERS)
        health = (await http.get("/health")).json()
    assert backend.chats[-1]["options"]["num_ctx"] == 8192
    assert health["context_window"]["served"] == 8192
    assert health["context_window"]["model_max"] is None


async def test_health_reports_learn_the_window_once_even_concurrently():
    import asyncio

    from vastllm.proxy.window import ContextWindow

    class Slow:
        calls = 0

        async def context_length(self, model):
            Slow.calls += 1
            await asyncio.sleep(0.05)
            return 32768

    window = ContextWindow(65536)
    backend = Slow()
    reports = await asyncio.gather(*(window.report(backend, "m", {}) for _ in range(20)))
    reports.append(await window.report(backend, "m", {}))
    assert Slow.calls == 1
    assert {r["served"] for r in reports} == {32768}
