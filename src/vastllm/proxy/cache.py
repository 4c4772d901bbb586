"""The answer cache: exact-match keys (pure) and a Redis store that never fails a request."""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import orjson

KEY_PREFIX = "vastllm:v1:"
_log = logging.getLogger("vastllm.proxy.cache")


def cache_key(shaping_fields: dict[str, Any], kind: str = "msg") -> str:
    """SHA-256 of the canonical JSON (sorted keys) of the answer-shaping fields.

    The fields come from ``ChatRequest.shaping_fields``: the backend model after aliasing and
    the normalized request (no metadata, no headers, no cache_control markers, no stream flag),
    so one entry serves streaming and non-streaming requests alike.
    """
    canonical = orjson.dumps(shaping_fields, option=orjson.OPT_SORT_KEYS)
    return KEY_PREFIX + kind + ":" + hashlib.sha256(canonical).hexdigest()


class RateLimitedWarning:
    """Log a warning at most once per ``interval`` seconds."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last = float("-inf")

    def warn(self, message: str, *args: object, now: float | None = None) -> bool:
        moment = time.monotonic() if now is None else now
        if moment - self._last < self._interval:
            return False
        self._last = moment
        self._logger.warning(message, *args)
        return True


class AnswerCache:
    """Redis-backed store of final messages. Any Redis failure means "bypass", never an error.

    After a failure Redis is skipped for ``retry_after`` seconds so a dead Redis costs nothing.
    """

    def __init__(self, client: Any, ttl: int, retry_after: float = 5.0) -> None:
        self._client = client
        self._ttl = ttl
        self._retry_after = retry_after
        self._down_until = 0.0
        self._warning = RateLimitedWarning(_log)
        self.last_error: str | None = None

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self._retry_after
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._warning.warn("redis unavailable, answering uncached: %s", self.last_error)

    def _ok(self) -> None:
        self._down_until = 0.0
        self.last_error = None

    async def get(self, key: str) -> bytes | None:
        """The stored bytes, None on a miss; raises ``CacheBypass`` if Redis is unusable."""
        if not self.available:
            raise CacheBypass
        try:
            value = await self._client.get(key)
        except Exception as exc:  # any Redis or socket failure: go on uncached
            self._failed(exc)
            raise CacheBypass from None
        self._ok()
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes) -> bool:
        if not self.available:
            return False
        try:
            await self._client.set(key, value, ex=self._ttl)
        except Exception as exc:
            self._failed(exc)
            return False
        self._ok()
        return True

    async def ping(self) -> bool:
        try:
            await self._client.ping()
        except Exception as exc:
            self._failed(exc)
            return False
        self._ok()
        return True

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception as exc:  # closing a broken client must not fail shutdown
            _log.debug("closing redis client: %s", exc)


class CacheBypass(Exception):
    """Redis could not be used for this request."""
