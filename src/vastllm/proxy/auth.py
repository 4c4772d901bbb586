"""The API key check: ``x-api-key: <key>`` or ``Authorization: Bearer <key>``, in constant time.

``KeyCheck.check`` (the routes) and ``KeyCheck.accepts`` (``server.GuardApp``, which must know
before it reads a large body) apply the same rule: ``x-api-key`` when present, else a Bearer
value; either trimmed of surrounding whitespace; compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from vastllm.proxy.asgi import Call
from vastllm.proxy.errors import ProxyError


def supplied_key(x_api_key: bytes | None, authorization: bytes | None) -> bytes | None:
    """The key a request carries (trimmed), or None when it carries none."""
    if x_api_key is not None:
        return x_api_key.strip()  # as a Bearer value is
    auth = authorization or b""
    if auth[:7].lower() == b"bearer ":
        return auth[7:].strip()
    return None


class KeyCheck:
    """``check(call)`` raises 401 ``authentication_error`` unless the call carries the key.
    Without a configured key every call passes."""

    __slots__ = ("_key",)

    def __init__(self, api_key: str | None) -> None:
        self._key = api_key.encode() if api_key else None

    @property
    def required(self) -> bool:
        return self._key is not None

    def _matches(self, supplied: bytes | None) -> bool:
        if self._key is None:
            return True
        return supplied is not None and hmac.compare_digest(supplied, self._key)

    def accepts(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """Whether raw ASGI headers carry the key (the last of repeated headers wins, as in the
        ``dict`` the routes see)."""
        if self._key is None:
            return True
        x_api_key = authorization = None
        for name, value in headers:
            if name == b"x-api-key":
                x_api_key = value
            elif name == b"authorization":
                authorization = value
        return self._matches(supplied_key(x_api_key, authorization))

    def check(self, call: Call, *, open_route: bool = False) -> None:
        if self._key is None or open_route:
            return
        supplied = supplied_key(call.headers.get(b"x-api-key"), call.headers.get(b"authorization"))
        if supplied is None:
            raise ProxyError(
                "authentication_error", "missing API key: send x-api-key or Authorization: Bearer"
            )
        if not self._matches(supplied):
            raise ProxyError("authentication_error", "invalid API key")
