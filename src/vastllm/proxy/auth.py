"""The API key check: ``x-api-key: <key>`` or ``Authorization: Bearer <key>``, in constant time."""

from __future__ import annotations

import hmac

from vastllm.proxy.asgi import Call
from vastllm.proxy.errors import ProxyError


class KeyCheck:
    """``check(call)`` raises 401 ``authentication_error`` unless the call carries the key.
    Without a configured key every call passes."""

    __slots__ = ("_key",)

    def __init__(self, api_key: str | None) -> None:
        self._key = api_key.encode() if api_key else None

    def check(self, call: Call, *, open_route: bool = False) -> None:
        if self._key is None or open_route:
            return
        supplied = call.headers.get(b"x-api-key")
        if supplied is not None:
            supplied = supplied.strip()  # as a Bearer value is
        else:
            auth = call.headers.get(b"authorization", b"")
            if auth[:7].lower() == b"bearer ":
                supplied = auth[7:].strip()
        if supplied is None:
            raise ProxyError(
                "authentication_error", "missing API key: send x-api-key or Authorization: Bearer"
            )
        if not hmac.compare_digest(supplied, self._key):
            raise ProxyError("authentication_error", "invalid API key")
