"""Small helpers shared by the proxy integration tests."""

from __future__ import annotations

import json

MODEL = "qwen3-coder:30b"
API_KEY = "test-key-0123456789"
BASIC = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 200,
    "messages": [{"role": "user", "content": "Write a tiny function please"}],
}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather of a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name = data = None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
        assert name is not None, block
        assert data is not None, block
        assert data["type"] == name
        events.append((name, data))
    return events


def sse_text(events: list[tuple[str, dict]]) -> str:
    return "".join(
        d["delta"]["text"]
        for n, d in events
        if n == "content_block_delta" and d["delta"]["type"] == "text_delta"
    )


def assert_anthropic_error(response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["request-id"].startswith("req_")
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert "Traceback" not in response.text
    return body
