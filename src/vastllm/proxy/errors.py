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


# --------------------------------------------------------------------------- backend failures
# Raised by a backend (``backend.py``) whatever its HTTP client; mapped to the ProxyError the
# client sees by ``translate_response.anthropic_error``. ``kind`` labels the failure in metrics.


class BackendError(Exception):
    """The backend could not be used."""

    kind = "transport"


class BackendUnreachable(BackendError):
    """No connection to the backend."""

    kind = "connect"


class BackendTimeout(BackendError):
    """The backend did not answer (or went silent) in time."""

    kind = "timeout"


class BackendConnectionLost(BackendError):
    """The connection to the backend broke, or it sent something that is not HTTP."""

    kind = "connection_lost"


class BackendStatus(BackendError):
    """The backend answered with an HTTP error; ``detail`` is its error message."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail
        self.kind = f"http_{status}"


class BackendBadReply(BackendError):
    """A successful answer whose content is unusable: not JSON (``bad_chunk``), or an error
    reported inside it (``stream_error``, ``detail`` is the backend's message)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
