"""Errors in the Anthropic shape: ``{"type": "error", "error": {"type": ..., "message": ...}}``."""

from __future__ import annotations

import orjson

# HTTP status of each Anthropic error type.
STATUS_OF_TYPE: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class ProxyError(Exception):
    """An error answered to the client; ``message`` is safe to show (no internals)."""

    def __init__(self, error_type: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = STATUS_OF_TYPE.get(error_type, 500) if status is None else status


def invalid(message: str) -> ProxyError:
    return ProxyError("invalid_request_error", message)


def error_body(error_type: str, message: str) -> dict[str, object]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def error_json(error_type: str, message: str) -> bytes:
    return orjson.dumps(error_body(error_type, message))
