"""The proxy's small Redis client against a real redis-server."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from vastllm.proxy.resp import RedisError, RespClient
from vastllm_lab.testing_services import REDIS_SERVER, RedisServer


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


async def test_pooled_connections_reconnect_once_after_a_redis_restart(redis_server):
    """Redis restarts while the loop is busy (it has not seen the old connections close):
    the next commands reconnect at once instead of failing."""
    client = RespClient(redis_server.url, connect_timeout=0.5, timeout=0.5)
    keys = [f"vastllm:test:r{i}" for i in range(8)]
    await asyncio.gather(*(client.set(k, b"before", ex=60) for k in keys))
    assert len(client._idle) == len(keys)  # eight pooled connections, all about to die
    redis_server.restart()  # synchronous: the loop does not run in between
    assert await client.get(keys[0]) is None  # a new server: empty, but answering
    assert client._idle
    assert len(client._idle) == 1
    await client.set(keys[1], b"after", ex=60)
    assert await client.get(keys[1]) == b"after"
    assert await asyncio.gather(*(client.ping() for _ in range(8))) == [True] * 8
    await client.aclose()


async def test_a_restart_during_concurrent_commands_costs_no_error(redis_server):
    client = RespClient(redis_server.url, connect_timeout=0.5, timeout=0.5)
    await asyncio.gather(*(client.ping() for _ in range(16)))
    redis_server.restart()
    assert await asyncio.gather(*(client.ping() for _ in range(16))) == [True] * 16
    await client.aclose()


async def test_a_lost_new_connection_is_not_retried(redis_server):
    """Redis gone for good: one connect attempt per command, an error, no retry loop."""
    client = RespClient(redis_server.url, connect_timeout=0.5, timeout=0.5)
    await client.ping()
    redis_server.kill()
    connects = 0
    real_connect = client._connect

    async def counting_connect():
        nonlocal connects
        connects += 1
        return await real_connect()

    client._connect = counting_connect  # type: ignore[method-assign]
    with pytest.raises(RedisError, match="cannot connect"):
        await client.get("vastllm:test:x")
    assert connects == 1
    await client.aclose()


async def test_a_hung_redis_times_out_each_command_and_its_connection_is_dropped(tmp_path):
    """Redis stops answering (SIGSTOP): every command in flight fails "Redis timed out"
    between the timeout and 1.25 times it (the watchdog's tick), not later; the connections
    are not pooled again; once Redis answers again, commands work."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        client = RespClient(server.url, connect_timeout=0.5, timeout=0.4)
        await asyncio.gather(*(client.ping() for _ in range(3)))
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        results = await asyncio.gather(
            *(client.get(f"vastllm:test:h{i}") for i in range(3)), return_exceptions=True
        )
        took = time.monotonic() - started
        assert all(isinstance(r, RedisError) and "timed out" in str(r) for r in results)
        assert 0.4 <= took < 0.4 * 1.25 + 0.3
        assert client._idle == []  # a connection in an unknown state is never reused
        assert client._deadlines == {}
        server.process.send_signal(signal.SIGCONT)
        assert await client.ping() is True
        await client.aclose()
    finally:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
        server.kill()


def test_the_timeout_holds_when_the_client_is_used_from_a_second_event_loop(tmp_path):
    """A client used under one event loop and then another (its pool empty: max_idle=0) still
    times a hung Redis out: the first loop's watchdog timer is not taken for the second's."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        client = RespClient(server.url, connect_timeout=0.5, timeout=0.4, max_idle=0)
        asyncio.run(client.ping())  # arms the watchdog on a loop that then ends

        async def hung() -> float:
            assert server.process is not None
            server.process.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            with pytest.raises(RedisError, match="timed out"):
                await asyncio.wait_for(client.get("vastllm:test:x"), 3)
            return time.monotonic() - started

        assert asyncio.run(hung()) < 0.4 * 1.25 + 0.3
    finally:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
        server.kill()
