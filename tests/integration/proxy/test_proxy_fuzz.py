"""Fuzzing request bodies: the proxy never answers 5xx and every error has Anthropic's shape."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxy_helpers import BASIC, WEATHER_TOOL

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
