"""Fuzzing request bodies: the proxy never answers 5xx and every error has Anthropic's shape."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxy_helpers import BASIC, WEATHER_TOOL

from vastllm.proxy.app import create_app
from vastllm.proxy.config import Settings

scalars = st.none() | st.booleans() | st.integers(-5, 70000) | st.floats(allow_nan=False,
          allow_infinity=False, width=32) | st.text(max_size=12)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
block_types = st.sampled_from(
    ["text", "image", "tool_use", "tool_result", "thinking", "document", "redacted_thinking", "x"]
)
blocks = st.fixed_dictionaries(
    {"type": block_types},
    optional={
        "text": json_values,
        "source": json_values,
        "id": json_values,
        "name": json_values,
        "input": json_values,
        "tool_use_id": json_values,
        "content": json_values,
        "is_error": json_values,
        "thinking": json_values,
    },
)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", 3]),
            "content": st.text(max_size=20) | st.lists(blocks, max_size=3) | json_values,
        }
    ),
    max_size=3,
)
FIELDS = ["model", "max_tokens", "messages", "system", "tools", "tool_choice", "stop_sequences",
          "temperature", "top_p", "top_k", "thinking", "stream", "metadata"]  # fmt: skip


@st.composite
def request_bodies(draw):
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(json_values)
    body = {**BASIC, "tools": [WEATHER_TOOL]}
    if kind == 1:
        body[draw(st.sampled_from(FIELDS))] = draw(json_values)
    elif kind == 2:
        body["messages"] = draw(messages)
    else:
        body["tool_choice"] = draw(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["auto", "any", "tool", "none", "x"])},
                optional={"name": st.sampled_from(["get_weather", "nope", 1])},
            )
        )
        body["stop_sequences"] = draw(st.lists(st.text(max_size=3), max_size=2))
    return body


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payload=request_bodies(), path=st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"])
)
def test_fuzzed_bodies_never_5xx(http, payload, path):
    response = http.post(
        path, content=json.dumps(payload), headers={"content-type": "application/json"}
    )
    assert response.status_code < 500, (payload, response.text)
    assert response.headers["request-id"].startswith("req_")
    if response.status_code >= 400:
        error = response.json()
        assert error["type"] == "error"
        assert error["error"]["type"] in {
            "invalid_request_error",
            "not_found_error",
            "request_too_large",
        }
        assert isinstance(error["error"]["message"], str)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=64))
def test_fuzzed_bytes_are_400(http, raw):
    response = http.post("/v1/messages", content=raw, headers={"content-type": "application/json"})
    assert response.status_code < 500
    if response.status_code >= 400:
        assert response.json()["type"] == "error"


# ------------------------------------------------ in process: many bodies, deep nesting too


class _Reply:
    def __init__(self) -> None:
        self.chunks = [
            {"message": {"role": "assistant", "content": "ok"}, "done": False},
            {"message": {"content": ""}, "done": True, "prompt_eval_count": 9, "eval_count": 1},
        ]

    async def json(self):
        return {**self.chunks[-1], "message": {"role": "assistant", "content": "ok"}}

    async def batches(self):
        for chunk in self.chunks:
            yield iter([chunk])

    async def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Backend:
    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def chat(self, body):
        json.dumps(body)  # what goes to Ollama must serialize
        return _Reply()

    async def model_names(self):
        return ["qwen3-coder:30b"]

    async def loaded_model_names(self):
        return []

    async def version(self):
        return "0.12.6"

    async def capabilities(self, model):
        return ["completion", "tools", "thinking"]

    async def context_length(self, model):
        return 262144

    async def loaded_context_lengths(self):
        return {}


class _Redis:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def get(self, key):
        return self.data.get(key)

    async def set(self, key, value, ex):
        self.data[key] = value

    async def ping(self):
        return True

    async def aclose(self):
        pass


@pytest.fixture(scope="module")
def in_process():
    """(loop, client) of the app in process, with a fake backend and a fake Redis."""
    loop = asyncio.new_event_loop()
    app = create_app(
        Settings(redis_url="redis://fake", api_key=None), backend=_Backend(), redis_client=_Redis()
    )
    loop.run_until_complete(app.startup())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy")
    yield loop, client
    loop.run_until_complete(client.aclose())
    loop.run_until_complete(app.shutdown())
    loop.close()


def _nested(depth: int, leaf: str = "{}") -> str:
    return '{"a":' * (depth - 1) + leaf + "}" * (depth - 1)


@st.composite
def raw_bodies(draw):
    """Request bodies as text: the structured ones above, or one with a value nested 1..1,100
    deep in ``tools[].input_schema`` or ``tool_use.input``."""
    if draw(st.integers(0, 3)):
        return json.dumps(draw(request_bodies()))
    depth = draw(st.integers(1, 1100))
    body = {**BASIC, "stream": draw(st.booleans())}
    if draw(st.booleans()):
        body["tools"] = [{"name": "t", "input_schema": "NESTED"}]
    else:
        body["messages"] = [
            {"role": "user", "content": "hi"},
            {"role": "assistant",
             "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": "NESTED"}]},
        ]  # fmt: skip
    return json.dumps(body).replace('"NESTED"', _nested(depth))


@settings(
    max_examples=1200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=raw_bodies(), path=st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]))
def test_fuzzed_bodies_in_process_never_5xx(in_process, raw, path):
    loop, client = in_process
    response = loop.run_until_complete(
        client.post(path, content=raw, headers={"content-type": "application/json"})
    )
    assert response.status_code < 500, (raw[:300], response.text)
    if response.status_code >= 400:
        assert response.json()["type"] == "error"
