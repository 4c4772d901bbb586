"""Cache keys: same answer-shaping input -> same key; any shaping field -> another key."""

from __future__ import annotations

import copy
import logging

import pytest

from vastllm.proxy.cache import (
    AnswerCache,
    CacheBypass,
    MemoryTier,
    RateLimitedWarning,
    cache_key,
)
from vastllm.proxy.translate_request import parse_request

BASE = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 100,
    "system": [{"type": "text", "text": "You are terse."}],
    "messages": [{"role": "user", "content": [{"type": "text", "text": "list files"}]}],
    "tools": [{"name": "Bash", "input_schema": {"type": "object", "properties": {}}}],
}


def key_of(body, backend="qwen3-coder:30b"):
    return cache_key(parse_request(body).shaping_fields(backend))


def variant(**changes):
    body = copy.deepcopy(BASE)
    body.update(changes)
    return body


def test_key_is_stable_and_prefixed():
    key = key_of(BASE)
    assert key == key_of(copy.deepcopy(BASE))
    assert key.startswith("vastllm:v1:msg:")
    assert len(key.rsplit(":", 1)[1]) == 64


@pytest.mark.parametrize(
    "changes",
    [
        {"metadata": {"user_id": "session-2"}},
        {"stream": True},
        {"model": "claude-opus-4-1"},  # another alias of the same backend model
        {"context_management": {"edits": []}},
        {
            "system": [
                {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": "list files",
                            "cache_control": {"type": "ephemeral"},
                        }
                    ],
                }
            ]
        },
    ],
)
def test_non_shaping_differences_keep_the_key(changes):
    assert key_of(variant(**changes)) == key_of(BASE)


@pytest.mark.parametrize(
    "changes",
    [
        {"system": "You are verbose."},
        {"messages": [{"role": "user", "content": "list all files"}]},
        {"tools": [{"name": "Read", "input_schema": {"type": "object", "properties": {}}}]},
        {"tool_choice": {"type": "none"}},
        {"tool_choice": {"type": "any"}},
        {"max_tokens": 101},
        {"temperature": 0.5},
        {"top_p": 0.5},
        {"top_k": 5},
        {"stop_sequences": ["END"]},
        {"thinking": {"type": "enabled", "budget_tokens": 1024}},
    ],
)
def test_every_shaping_field_changes_the_key(changes):
    assert key_of(variant(**changes)) != key_of(BASE)


def test_backend_model_is_part_of_the_key():
    assert key_of(BASE, "qwen2.5-coder:7b") != key_of(BASE)


def test_kind_separates_count_and_message_entries():
    fields = parse_request(BASE).shaping_fields("m")
    assert cache_key(fields, "count") != cache_key(fields, "msg")


class FlakyRedis:
    """An in-memory Redis stand-in whose failure can be switched on."""

    def __init__(self):
        self.data = {}
        self.down = False
        self.calls = 0

    async def get(self, key):
        self.calls += 1
        if self.down:
            raise ConnectionError("connection refused")
        return self.data.get(key)

    async def set(self, key, value, ex):
        self.calls += 1
        if self.down:
            raise ConnectionError("connection refused")
        self.data[key] = value
        self.ttl = ex

    async def ping(self):
        if self.down:
            raise ConnectionError("connection refused")
        return True


async def test_store_roundtrip_with_ttl():
    redis = FlakyRedis()
    cache = AnswerCache(redis, ttl=42)
    assert await cache.get("k") is None
    assert await cache.put("k", b"v")
    assert await cache.get("k") == b"v"
    assert redis.ttl == 42


async def test_redis_failure_is_a_bypass_then_skipped_until_retry(caplog):
    redis = FlakyRedis()
    cache = AnswerCache(redis, ttl=1, retry_after=60)
    redis.down = True
    with caplog.at_level(logging.WARNING), pytest.raises(CacheBypass):
        await cache.get("k")
    assert "redis unavailable" in caplog.text
    calls = redis.calls
    with pytest.raises(CacheBypass):
        await cache.get("k")  # skipped: Redis is not even asked during the back-off
    assert redis.calls == calls
    assert await cache.put("k", b"v") is False
    assert not await cache.ping()


async def test_redis_recovery_is_noticed_by_ping():
    redis = FlakyRedis()
    cache = AnswerCache(redis, ttl=1, retry_after=60)
    redis.down = True
    assert not await cache.ping()
    redis.down = False
    assert await cache.ping()
    assert cache.available
    assert await cache.get("k") is None


def test_rate_limited_warning_once_a_minute(caplog):
    warning = RateLimitedWarning(logging.getLogger("t"), interval=60)
    with caplog.at_level(logging.WARNING):
        assert warning.warn("x", now=1000.0)
        assert not warning.warn("x", now=1059.0)
        assert warning.warn("x", now=1060.5)
    assert caplog.text.count("x") == 2


def test_memory_tier_lru_by_bytes():
    memory = MemoryTier(max_bytes=8000, ttl=10)  # entries cost their size + 256 bytes
    memory.put("a", b"x" * 744, now=0)
    memory.put("b", b"y" * 744, now=0)
    assert memory.size == 2000
    assert memory.get("a", now=1) == b"x" * 744  # a is now the most recently used
    for index in range(7):
        memory.put(f"k{index}", b"z" * 744, now=1)
    assert memory.size <= 8000
    assert memory.get("b", now=1) is None  # least recently used went first
    assert memory.get("a", now=1) is not None


def test_memory_tier_expiry_and_oversize():
    memory = MemoryTier(max_bytes=8000, ttl=10)
    memory.put("a", b"v", now=0)
    assert memory.get("a", now=9.9) == b"v"
    assert memory.get("a", now=10) is None
    assert len(memory) == 0
    memory.put("big", b"x" * 1001, now=0)  # over 1/8 of the budget: Redis only
    assert memory.get("big", now=0) is None
    assert memory.size == 0


async def test_hits_from_memory_skip_redis_and_survive_an_outage():
    redis = FlakyRedis()
    cache = AnswerCache(redis, ttl=60, retry_after=60)
    await cache.put("k", b"v")
    calls = redis.calls
    assert await cache.get("k") == b"v"
    assert redis.calls == calls  # served from memory
    redis.down = True
    assert await cache.get("k") == b"v"
    with pytest.raises(CacheBypass):
        await cache.get("other")


async def test_redis_hit_is_kept_in_memory():
    redis = FlakyRedis()
    redis.data["k"] = b"from-redis"
    cache = AnswerCache(redis, ttl=60)
    assert await cache.get("k") == b"from-redis"
    redis.down = True
    assert await cache.get("k") == b"from-redis"
