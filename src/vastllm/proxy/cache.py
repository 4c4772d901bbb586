"""The answer cache: exact-match keys (pure) and a Redis store that never fails a request."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
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


MEMORY_BYTES = 16 * 1024 * 1024
MAX_ENTRY_BYTES = 1024 * 1024  # VASTLLM_CACHE_MAX_ENTRY_BYTES: larger answers are not stored
MEMORY_TTL = 300.0
_ENTRY_OVERHEAD = 256  # bytes of Python objects per entry (key, tuple, dict slot), counted too


class MemoryTier:
    """Recently used answers in process memory: LRU, bounded in bytes, entries expire.

    Keys are content hashes, so an entry can never be wrong, only stale for at most ``ttl``
    seconds after Redis dropped it (an expiry or a flush).
    """

    def __init__(self, max_bytes: int = MEMORY_BYTES, ttl: float = MEMORY_TTL) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.size = 0
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: str, now: float | None = None) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if (time.monotonic() if now is None else now) >= item[0]:
            self._remove(key)
            return None
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: str, value: bytes, now: float | None = None) -> None:
        if len(value) > self.max_bytes // 8:
            return  # a very large answer lives in Redis only
        if key in self._items:
            self._remove(key)
        moment = time.monotonic() if now is None else now
        self._items[key] = (moment + self.ttl, value)
        self.size += len(value) + _ENTRY_OVERHEAD
        while self.size > self.max_bytes:
            _key, (_expires, dropped) = self._items.popitem(last=False)
            self.size -= len(dropped) + _ENTRY_OVERHEAD

    def _remove(self, key: str) -> None:
        _expires, value = self._items.pop(key)
        self.size -= len(value) + _ENTRY_OVERHEAD


class AnswerCache:
    """Final messages in Redis, the recently used ones also in memory (``MemoryTier``).

    Any Redis failure means "bypass", never an error. After a failure Redis is skipped for
    ``retry_after`` seconds so a dead Redis costs nothing. An answer larger than
    ``max_entry_bytes`` is not stored at all (neither tier): it would cost Redis memory and a
    large transfer per hit for an answer unlikely to be asked for again word for word.
    """

    def __init__(
        self,
        client: Any,
        ttl: int,
        retry_after: float = 5.0,
        memory: MemoryTier | None = None,
        max_entry_bytes: int = MAX_ENTRY_BYTES,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self.max_entry_bytes = max_entry_bytes
        self.too_large = 0  # answers not stored for their size
        self.memory = memory if memory is not None else MemoryTier(ttl=min(float(ttl), MEMORY_TTL))
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
        """The stored bytes, None on a miss; raises ``CacheBypass`` if neither memory has it
        nor Redis is usable."""
        value = self.memory.get(key)
        if value is not None:
            return value
        if not self.available:
            raise CacheBypass
        try:
            value = await self._client.get(key)
        except Exception as exc:  # any Redis or socket failure: go on uncached
            self._failed(exc)
            raise CacheBypass from None
        self._ok()
        if not isinstance(value, bytes):
            return None
        self.memory.put(key, value)
        return value

    async def put(self, key: str, value: bytes) -> bool:
        """Store in both tiers (``remember``, then ``persist``); whether Redis took it."""
        if not self.remember(key, value):
            return False
        return await self.persist(key, value)

    def remember(self, key: str, value: bytes) -> bool:
        """The memory tier's part of ``put``, at once (no I/O): False when the answer is too
        large to be cached at all. Whether the memory tier holds it now: ``key in memory``."""
        if len(value) > self.max_entry_bytes:
            self.too_large += 1
            return False
        self.memory.put(key, value)
        return True

    async def persist(self, key: str, value: bytes) -> bool:
        """Redis's part of ``put`` (after ``remember``); whether Redis took it."""
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
