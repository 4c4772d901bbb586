"""The proxy with the official anthropic SDK as client and the Ollama lab double as backend."""

from __future__ import annotations

import json
import time
import uuid

import anthropic
import httpx
import pytest
from proxy_helpers import (
    API_KEY,
    BASIC,
    MODEL,
    WEATHER_TOOL,
    assert_anthropic_error,
    parse_sse,
    sse_text,
)

NO_CACHE = {"cache-control": "no-cache"}


def unique(text: str) -> list[dict]:
    return [{"role": "user", "content": f"{text} [{uuid.uuid4().hex}]"}]


def test_create_non_streaming(client):
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-6", max_tokens=200, messages=unique("Write a function")
    )
    message = raw.parse()
    assert raw.headers["x-cache"] == "miss"
    assert raw.headers["request-id"].startswith("req_")
    assert message.model == "claude-sonnet-4-6"  # the name the client asked for
    assert message.id.startswith("msg_")
    assert message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text.strip()
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0


def test_stream_event_order_and_same_text_as_non_stream(client, http):
    messages = unique("Explain streams")
    whole = client.messages.create(
        model="claude-sonnet-4-6", max_tokens=300, messages=messages, extra_headers=NO_CACHE
    )
    response = http.post(
        "/v1/messages",
        json={
            "model": "claude-sonnet-4-6",
            "max_tokens": 300,
            "messages": messages,
            "stream": True,
        },
        headers=NO_CACHE,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[2] == "content_block_start"
    assert set(names[3:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"]["output_tokens"] == whole.usage.output_tokens
    assert sse_text(events) == whole.content[0].text

    with client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=300, messages=messages, extra_headers=NO_CACHE
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == whole.content[0].text
    assert final.usage.input_tokens == whole.usage.input_tokens


def test_stream_relays_what_arrives_at_once_and_merges_one_read(ollama_emulator, start_proxy):
    """Each read from Ollama goes out as it arrives: with a backend that generates like a
    model (chunks 30 ms apart), one delta event per chunk, spread over the generation time;
    with a backend that sends everything at once, the chunks of one read are one delta."""
    delay = 0.03
    request = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 12,
        "stream": True,
        "messages": unique("Stream this"),
    }

    def deltas(proxy_url: str) -> list[tuple[float, str]]:
        seen = []
        started = time.monotonic()
        with httpx.stream(
            "POST", proxy_url + "/v1/messages", json=request, headers=NO_CACHE, timeout=30
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: ") and '"text_delta"' in line:
                    text = json.loads(line[6:])["delta"]["text"]
                    seen.append((time.monotonic() - started, text))
        return seen

    slow = ollama_emulator(preload=[MODEL], faults={"chunk_delay": delay})
    paced = deltas(start_proxy(slow.url, "").url)
    assert len(paced) >= 8  # one per chunk (12 tokens, a few chunks may share a read)
    assert paced[-1][0] - paced[0][0] >= delay * (len(paced) - 1) * 0.5  # not held back

    fast = ollama_emulator(preload=[MODEL])
    burst = deltas(start_proxy(fast.url, "").url)
    assert len(burst) < len(paced)
    assert "".join(text for _, text in burst) == "".join(text for _, text in paced)


@pytest.mark.parametrize("streamed", [False, True])
def test_tool_use_round_trip(client, streamed):
    question = unique("Please call get_weather for Oslo")
    params = {"model": "claude-sonnet-4-6", "max_tokens": 300, "tools": [WEATHER_TOOL]}
    if streamed:
        with client.messages.stream(messages=question, **params) as stream:
            first = stream.get_final_message()
    else:
        first = client.messages.create(messages=question, **params)
    assert first.stop_reason == "tool_use"
    call = next(block for block in first.content if block.type == "tool_use")
    assert call.name == "get_weather"
    assert call.id.startswith("toolu_")
    assert set(call.input) == {"city"}

    follow_up = [
        *question,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 degrees"}
            ],
        },
    ]
    if streamed:
        with client.messages.stream(messages=follow_up, **params) as stream:
            second = stream.get_final_message()
    else:
        second = client.messages.create(messages=follow_up, **params)
    assert second.stop_reason == "end_turn"
    assert "sunny, 21 degrees" in second.content[0].text


def test_tool_choice_none_prevents_the_call(client):
    message = client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=200,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "none"},
        messages=unique("Please call get_weather for Oslo"),
    )
    assert message.stop_reason == "end_turn"
    assert all(block.type == "text" for block in message.content)


def test_stop_sequence_reported(client):
    messages = unique("Say many words")
    full = client.messages.create(model="claude-sonnet-4-6", max_tokens=300, messages=messages)
    words = full.content[0].text.split()
    assert len(words) >= 4
    stop = " " + words[2]
    cut = client.messages.create(
        model="claude-sonnet-4-6", max_tokens=300, messages=messages, stop_sequences=[stop]
    )
    assert cut.stop_reason == "stop_sequence"
    assert cut.stop_sequence == stop
    assert cut.content[0].text == full.content[0].text[: full.content[0].text.index(stop)]
    with client.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=300,
        messages=messages,
        stop_sequences=[stop],
        extra_headers=NO_CACHE,
    ) as stream:
        streamed = stream.get_final_message()
    assert (streamed.stop_reason, streamed.stop_sequence) == ("stop_sequence", stop)
    assert streamed.content[0].text == cut.content[0].text


def test_max_tokens_stop_reason(client):
    message = client.messages.create(
        model="claude-sonnet-4-6", max_tokens=2, messages=unique("Tell a long story")
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens <= 2


def test_thinking_forwarded_to_a_thinking_model(client):
    message = client.messages.create(
        model="think-small",
        max_tokens=400,
        messages=unique("Think about it"),
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    kinds = [block.type for block in message.content]
    assert kinds[0] == "thinking"
    assert message.content[0].thinking.strip()
    assert "text" in kinds
    with client.messages.stream(
        model="think-small",
        max_tokens=400,
        messages=unique("Think about it"),
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[0].type == "thinking"


def test_thinking_dropped_silently_for_other_models(client):
    message = client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=16000,
        messages=unique("hello"),
        thinking={"type": "enabled", "budget_tokens": 15999},
    )
    assert [block.type for block in message.content] == ["text"]


def test_claude_code_request_shape_is_accepted(http):
    body = {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": f"user_abc_account__session_{uuid.uuid4()}"},
        "system": [
            {
                "type": "text",
                "text": "You are Claude Code.",
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "tools": [
            {
                "name": "Bash",
                "description": "Run a command",
                "input_schema": {
                    "type": "object",
                    "properties": {"command": {"type": "string"}},
                    "required": ["command"],
                    "additionalProperties": False,
                    "$schema": "http://json-schema.org/draft-07/schema#",
                },
            },
            {
                "name": "mcp__later",
                "description": "deferred",
                "input_schema": {},
                "defer_loading": True,
            },
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                    {
                        "type": "text",
                        "text": f"hi {uuid.uuid4()}",
                        "cache_control": {"type": "ephemeral"},
                    },
                ],
            }
        ],
    }
    response = http.post(
        "/v1/messages?beta=true",
        json=body,
        headers={
            "anthropic-beta": "claude-code-20250219,context-management-2025-06-27",
            "anthropic-version": "2099-01-01",
            "anthropic-dangerous-direct-browser-access": "true",
        },
    )
    assert response.status_code == 200, response.text
    events = parse_sse(response.text)
    assert events[-1][0] == "message_stop"


def test_count_tokens(client):
    short = client.messages.count_tokens(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}]
    )
    long = client.messages.count_tokens(
        model="claude-sonnet-4-6",
        system="You are a careful engineer. " * 20,
        messages=[{"role": "user", "content": "hi there, how are you doing today?"}],
        tools=[WEATHER_TOOL],
    )
    assert short.input_tokens > 0
    assert long.input_tokens > short.input_tokens
    # the same count the backend reports for a real request
    created = client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=5,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers=NO_CACHE,
    )
    assert created.usage.input_tokens == short.input_tokens


def test_aliasing_and_unknown_model(client, http, ollama_emulator_session):
    haiku = client.messages.create(
        model="claude-3-5-haiku-20241022",
        max_tokens=100,
        messages=[{"role": "user", "content": "alias check"}],
        extra_headers=NO_CACHE,
    )
    assert haiku.model == "claude-3-5-haiku-20241022"
    direct = httpx.post(
        ollama_emulator_session.url + "/api/chat",
        json={
            "model": "qwen2.5-coder:1.5b",
            "stream": False,
            "options": {"num_predict": 100},
            "messages": [{"role": "user", "content": "alias check"}],
        },
    ).json()
    assert haiku.content[0].text == direct["message"]["content"]
    # a backend model name is accepted as is
    same = client.messages.create(
        model="qwen2.5-coder:1.5b",
        max_tokens=100,
        messages=[{"role": "user", "content": "alias check"}],
    )
    assert same.content[0].text == direct["message"]["content"]

    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(
            model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.body["error"]["type"] == "not_found_error"
    assert "gpt-4o" in info.value.body["error"]["message"]
    # alias to a model the backend does not have: Ollama's 404 becomes not_found_error
    missing = http.post("/v1/messages", json={**BASIC, "model": "ghost-x"})
    assert_anthropic_error(missing, 404, "not_found_error")


def test_models_list(http):
    body = http.get("/v1/models").json()
    ids = [item["id"] for item in body["data"]]
    assert "qwen3-coder:30b" in ids
    assert "qwen2.5-coder:1.5b" in ids
    assert all(item["type"] == "model" for item in body["data"])
    assert body["has_more"] is False


def test_auth(shared_proxy):
    url = shared_proxy.url + "/v1/messages"
    for headers in (
        {},
        {"x-api-key": "wrong"},
        {"authorization": "Bearer wrong"},
        {"authorization": "Basic abc"},
    ):
        response = httpx.post(url, json=BASIC, headers=headers)
        assert_anthropic_error(response, 401, "authentication_error")
        assert response.headers["x-should-retry"] == "false"
    import anthropic as sdk

    with sdk.Anthropic(
        base_url=shared_proxy.url, api_key=None, auth_token=API_KEY, max_retries=0
    ) as bearer:
        assert bearer.messages.create(**BASIC).type == "message"
    with (
        sdk.Anthropic(base_url=shared_proxy.url, api_key="nope", max_retries=0) as wrong,
        pytest.raises(sdk.AuthenticationError),
    ):
        wrong.messages.create(**BASIC)
    # open routes and key-protected routes
    assert httpx.get(shared_proxy.url + "/health").status_code == 200
    assert httpx.get(shared_proxy.url + "/health/liveness").status_code == 200
    assert httpx.head(shared_proxy.url + "/").status_code == 200
    assert httpx.get(shared_proxy.url + "/").json()["service"] == "vastllm-proxy"
    for path in ("/metrics", "/v1/models"):
        assert_anthropic_error(httpx.get(shared_proxy.url + path), 401, "authentication_error")
        ok = httpx.get(shared_proxy.url + path, headers={"x-api-key": API_KEY})
        assert ok.status_code == 200


def test_health_shape(shared_proxy):
    health = httpx.get(shared_proxy.url + "/health").json()
    assert health["status"] == "ok"
    assert health["ollama"]["reachable"] is True
    assert isinstance(health["ollama"]["version"], str)
    assert health["model"]["name"] == "qwen3-coder:30b"
    assert health["model"]["present"] is True
    assert isinstance(health["model"]["loaded"], bool)
    assert health["redis"] == {"enabled": True, "reachable": True}
    assert set(health["cache"]) == {"hits", "misses", "bypasses", "hit_ratio"}
    assert health["uptime_seconds"] > 0
    ready = httpx.get(shared_proxy.url + "/health/readiness")
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")


def test_metrics(http):
    http.post("/v1/messages", json={**BASIC, "messages": unique("metrics")})
    text = http.get("/metrics").text
    assert 'vastllm_requests_total{route="messages",status="200"}' in text
    assert 'vastllm_cache_requests_total{result="miss"}' in text
    assert "vastllm_cache_hit_ratio " in text
    assert 'vastllm_request_duration_seconds_bucket{route="messages",le="+Inf"}' in text
    assert "vastllm_time_to_first_token_seconds_count" in text
    assert "vastllm_input_tokens_total" in text
    assert "vastllm_upstream_errors_total" in text
