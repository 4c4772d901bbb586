"""The raw keep-alive HTTP/1.1 client, against scripted loopback servers."""

from __future__ import annotations

import asyncio
import socket

import pytest

from vastllm.proxy.upstream import ConnectFailed, ConnectionLost, UpstreamPool, UpstreamTimeout


class Scripted:
    """A loopback server answering each request with the next scripted action."""

    def __init__(self, actions):
        self.actions = list(actions)
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_client = asyncio.Event()

    async def handle(self, reader, writer):
        self.connections += 1
        try:
            while self.actions:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                action = self.actions.pop(0)
                keep = await action(writer)
                if not keep:
                    break
            else:
                await reader.read()  # wait for the client to go away
                self.closed_by_client.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client.set()
        finally:
            writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()


def send(*parts: bytes, keep: bool = True, pause: float = 0.0):
    async def action(writer):
        for part in parts:
            writer.write(part)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        return keep

    return action


LENGTH = b'HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{"ok":true}'


def pool_for(server, read_timeout=5.0):
    return UpstreamPool(f"http://127.0.0.1:{server.port}", 1.0, read_timeout)


async def test_content_length_and_keep_alive_reuse():
    async with Scripted([send(LENGTH), send(LENGTH)]) as server:
        pool = pool_for(server)
        for _ in range(2):
            response = await pool.request("POST", "/api/chat", b'{"a":1}')
            assert response.status == 200
            assert await response.read() == b'{"ok":true}'
        assert server.connections == 1
        first = server.requests[0]
        assert first.startswith(b"POST /api/chat HTTP/1.1\r\n")
        assert b"content-length: 7\r\n" in first
        assert first.endswith(b'{"a":1}')
        pool.close()


async def test_chunked_body_split_byte_by_byte():
    body = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    pieces = [body[i : i + 1] for i in range(len(body))]
    async with Scripted([send(*pieces, pause=0.001), send(LENGTH)]) as server:
        pool = pool_for(server)
        response = await pool.request("GET", "/x")
        chunks = [chunk async for chunk in response.iter_chunks()]
        assert b"".join(chunks) == b"hello world"
        response.close()
        again = await pool.request("GET", "/x")
        assert await again.read() == b'{"ok":true}'
        assert server.connections == 1  # the fully read chunked response was reused
        pool.close()


async def test_drain_after_partial_iteration_resumes_the_buffer():
    body = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    async with Scripted([send(body), send(LENGTH)]) as server:
        pool = pool_for(server)
        response = await pool.request("GET", "/x")
        async for chunk in response.iter_chunks():
            assert chunk == b"abc"
            break
        rest = [chunk async for chunk in response.iter_chunks()]
        assert rest == []
        response.close()
        await (await pool.request("GET", "/x")).read()
        assert server.connections == 1
        pool.close()


async def test_close_delimited_body_is_not_reused():
    async with Scripted([send(b"HTTP/1.0 200 OK\r\n\r\nall of it", keep=False), send(LENGTH)]) as s:
        pool = pool_for(s)
        assert await (await pool.request("GET", "/")).read() == b"all of it"
        assert await (await pool.request("GET", "/")).read() == b'{"ok":true}'
        assert s.connections == 2
        pool.close()


async def test_connection_cut_mid_body_is_connection_lost():
    cut = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel"
    async with Scripted([send(cut, keep=False)]) as server:
        pool = pool_for(server)
        response = await pool.request("POST", "/api/chat", b"{}")
        with pytest.raises(ConnectionLost):
            async for _chunk in response.iter_chunks():
                pass
        pool.close()


async def test_read_timeout():
    async def silent(writer):
        await asyncio.sleep(2)
        return False

    async with Scripted([silent]) as server:
        pool = pool_for(server, read_timeout=0.2)
        with pytest.raises(UpstreamTimeout):
            await pool.request("GET", "/")
        pool.close()


async def test_read_timeout_mid_body():
    async def stall(writer):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await asyncio.sleep(2)
        return False

    async with Scripted([stall]) as server:
        pool = pool_for(server, read_timeout=0.3)
        response = await pool.request("POST", "/api/chat", b"{}")
        got = []

        async def consume():
            async for chunk in response.iter_chunks():
                got.append(chunk)

        with pytest.raises(UpstreamTimeout):
            await consume()
        assert got == [b"abc"]
        pool.close()


async def test_connect_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pool = UpstreamPool(f"http://127.0.0.1:{port}", 1.0, 1.0)
    with pytest.raises(ConnectFailed, match="cannot connect"):
        await pool.request("GET", "/")


async def test_stale_keep_alive_connection_is_retried_once():
    # the server answers once, then closes the idle connection; the next request must not fail
    async with Scripted([send(LENGTH, keep=False), send(LENGTH)]) as server:
        pool = pool_for(server)
        assert await (await pool.request("GET", "/")).read() == b'{"ok":true}'
        await asyncio.sleep(0.05)
        assert await (await pool.request("GET", "/")).read() == b'{"ok":true}'
        assert server.connections == 2
        pool.close()


async def test_closing_an_unfinished_response_drops_the_connection():
    endless = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n"
    async with Scripted([send(endless), send(LENGTH)]) as server:
        pool = pool_for(server)
        response = await pool.request("POST", "/api/chat", b"{}")
        async for _chunk in response.iter_chunks():
            break
        response.close()  # the client went away: Ollama must see the connection close
        await asyncio.wait_for(server.closed_by_client.wait(), 2)
        pool.close()


async def test_cancel_while_waiting_for_headers_closes_the_connection():
    got_request = asyncio.Event()
    saw_close = asyncio.Event()

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        got_request.set()
        await reader.read()  # never answers; reads until the client hangs up
        saw_close.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool(f"http://127.0.0.1:{port}", 1.0, 30.0)
    task = asyncio.create_task(pool.request("POST", "/api/chat", b"{}"))
    await asyncio.wait_for(got_request.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(saw_close.wait(), 2)  # Ollama would now stop generating
    server.close()
