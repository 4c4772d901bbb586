"""The proxy's HTTP client against a misbehaving backend on loopback: a broken chunked body is a
lost connection, never a hang, an empty body or a silently shortened one."""

from __future__ import annotations

import asyncio

import pytest

from vastllm.proxy.upstream import ConnectionLost, UpstreamPool, _chunk_size


@pytest.mark.parametrize(
    ("line", "size"), [(b"0", 0), (b"1a", 26), (b"FF;ext=1", 255), (b" 5 ", 5)]
)
def test_chunk_size_reads_hex(line: bytes, size: int) -> None:
    assert _chunk_size(line) == size


@pytest.mark.parametrize("line", [b"", b"-6", b"0x10", b"1_0", b"zz", b"123456789"])
def test_chunk_size_rejects_what_is_not_hex(line: bytes) -> None:
    with pytest.raises(ValueError, match="bad chunk size"):
        _chunk_size(line)


async def _body_from(raw_body: bytes) -> bytes:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + raw_body)
        await writer.drain()
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool(f"http://127.0.0.1:{port}", connect_timeout=2, read_timeout=3)
    try:
        response = await pool.request("GET", "/x")
        async with asyncio.timeout(4):
            return await response.read()
    finally:
        server.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"-6\r\nxx\r\n0\r\n\r\n",  # a negative size once looped forever without awaiting
        b"-4\r\nxx\r\n0\r\n\r\n",
        b"\r\nhello\r\n0\r\n\r\n",  # an empty size line is not the end of the body
        b"5\r\nhelloXX0\r\n\r\n",  # chunk data not followed by CRLF
    ],
)
async def test_broken_chunked_body_is_a_lost_connection(raw: bytes) -> None:
    with pytest.raises(ConnectionLost):
        await _body_from(raw)


async def test_well_formed_chunked_body_is_read_whole() -> None:
    assert await _body_from(b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n") == b"hello world"
