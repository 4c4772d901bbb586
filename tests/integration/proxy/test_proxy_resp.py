"""The proxy's small Redis client against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
from proxy_helpers import REDIS_SERVER, RedisServer

from vastllm.proxy.resp import RedisError, RespClient


async def test_get_set_with_ttl_and_ping(redis_server):
    client = RespClient(redis_server.url)
    assert await client.ping() is True
    assert await client.get("vastllm:test:missing") is None
    payload = bytes(range(256)) * 100  # binary-safe, larger than one socket read
    await client.set("vastllm:test:k", payload, ex=100)
    assert await client.get("vastllm:test:k") == payload
    ttl = await client.command(b"TTL", b"vastllm:test:k")
    assert isinstance(ttl, int)
    assert 0 < ttl <= 100
    await client.aclose()


async def test_concurrent_commands_use_separate_connections(redis_server):
    client = RespClient(redis_server.url)
    keys = [f"vastllm:test:{i}" for i in range(50)]
    await asyncio.gather(*(client.set(k, k.encode(), ex=60) for k in keys))
    values = await asyncio.gather(*(client.get(k) for k in keys))
    assert values == [k.encode() for k in keys]
    await client.aclose()


async def test_password_and_database(tmp_path):
    server = RedisServer(tmp_path, ["--requirepass", "s3cret pass"])
    server.start()
    try:
        url = f"redis://:s3cret%20pass@127.0.0.1:{server.port}/3"
        client = RespClient(url)
        await client.set("vastllm:test:db", b"three", ex=60)
        assert await client.command(b"SELECT", b"3") == b"OK"
        assert await client.get("vastllm:test:db") == b"three"
        other_db = RespClient(f"redis://:s3cret%20pass@127.0.0.1:{server.port}/0")
        assert await other_db.get("vastllm:test:db") is None
        wrong = RespClient(f"redis://:nope@127.0.0.1:{server.port}/0")
        with pytest.raises(RedisError, match=r"Redis error: (WRONGPASS|ERR invalid)"):
            await wrong.ping()
        no_password = RespClient(f"redis://127.0.0.1:{server.port}/0")
        with pytest.raises(RedisError, match="NOAUTH"):
            await no_password.get("x")
        await client.aclose()
        await other_db.aclose()
    finally:
        server.kill()


async def test_unix_socket(tmp_path):
    socket_path = tmp_path / "redis.sock"
    server = RedisServer(tmp_path, ["--unixsocket", str(socket_path), "--unixsocketperm", "700"])
    server.start()
    try:
        client = RespClient(f"unix://{socket_path}?db=2")
        await client.set("vastllm:test:unix", b"v", ex=60)
        assert await client.get("vastllm:test:unix") == b"v"
        await client.aclose()
    finally:
        server.kill()


async def test_down_then_back(redis_server):
    client = RespClient(redis_server.url, connect_timeout=0.5, timeout=0.5)
    await client.set("vastllm:test:x", b"1", ex=60)
    redis_server.kill()
    with pytest.raises(RedisError):
        await client.get("vastllm:test:x")  # the pooled connection is dead
    with pytest.raises(RedisError, match="cannot connect"):
        await client.get("vastllm:test:x")
    redis_server.start()
    assert await client.ping() is True
    await client.aclose()


def test_bad_database_number_is_refused():
    with pytest.raises(ValueError, match="database number"):
        RespClient("redis://127.0.0.1:6379/zero")


def test_redis_server_binary_is_where_the_fixture_expects():
    assert REDIS_SERVER == "/usr/bin/redis-server"
