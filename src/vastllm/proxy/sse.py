"""Server-sent events encoding of Anthropic stream events."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson


def encode_event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def encode_events(events: Iterable[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(encode_event(name, data) for name, data in events)


def error_event(error_type: str, message: str) -> bytes:
    return encode_event(
        "error", {"type": "error", "error": {"type": error_type, "message": message}}
    )
