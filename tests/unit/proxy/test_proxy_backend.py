"""``OllamaBackend`` against a scripted HTTP server on loopback: what the routes rely on, whatever
HTTP client the backend uses (NDJSON framing, error statuses, transport failures)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from vastllm.proxy.backend import OllamaBackend, parse_chunk
from vastllm.proxy.errors import (
    BackendBadReply,
    BackendConnectionLost,
    BackendStatus,
    BackendTimeout,
    BackendUnreachable,
)

CLOSE = None  # in a list of writes: the server closes the connection there


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


@asynccontextmanager
async def ollama(replies: dict[str, list[bytes | None]]) -> AsyncIterator[OllamaBackend]:
    """A server answering each path with its list of raw writes (a pause between them)."""

    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                path = head.split(b" ")[1].decode()
                for raw in replies[path]:
                    if raw is CLOSE:
                        writer.close()
                        return
                    writer.write(raw)
                    await writer.drain()
                    await asyncio.sleep(0.01)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = OllamaBackend(
        f"http://127.0.0.1:{port}", connect_timeout=1, read_timeout=1, info_timeout=0.5
    )
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()
        server.close()
        for writer in writers:
            writer.close()
        await asyncio.sleep(0.01)  # the transports finish closing


def ok_json(data: object) -> bytes:
    body = json.dumps(data).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


STREAM_HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


async def collect(reply, into: list[dict]) -> None:
    async for batch in reply.batches():
        into.extend(batch)


async def test_streamed_chunks_are_split_on_lines_across_reads():
    lines = [
        b'{"message":{"content":"Hel"},"done":false}\n',
        b'{"message":{"content":"lo"},"done":false}\n',
        b'{"done":true,"eval_count":2}',  # the last line without its newline
    ]
    whole = b"".join(lines)
    # two socket writes, the first ending in the middle of a line
    writes: list[bytes | None] = [
        STREAM_HEAD + b"%x\r\n%s\r\n" % (10, whole[:10]),
        chunked(whole[10:]),
    ]
    async with ollama({"/api/chat": writes}) as backend:
        reply = await backend.chat({"model": "m", "stream": True})
        chunks = [chunk async for batch in reply.batches() for chunk in batch]
        reply.close()
    assert [c.get("message", {}).get("content") for c in chunks] == ["Hel", "lo", None]
    assert chunks[-1] == {"done": True, "eval_count": 2}


async def test_an_error_chunk_or_garbage_is_a_bad_reply_when_reached():
    body = b'{"message":{"content":"a"}}\n{"error":"model is overloaded"}\nnot json\n'
    async with ollama({"/api/chat": [STREAM_HEAD + chunked(body)]}) as backend:
        reply = await backend.chat({"model": "m"})
        seen: list[dict] = []
        with pytest.raises(BackendBadReply) as info:
            await collect(reply, seen)
        reply.close()
    assert seen == [{"message": {"content": "a"}}]
    assert info.value.kind == "stream_error"
    assert info.value.detail == "model is overloaded"


async def test_whole_answer_and_info_calls():
    replies = {
        "/api/chat": [ok_json({"message": {"content": "hi"}, "done": True})],
        "/api/tags": [ok_json({"models": [{"name": "qwen3:8b"}, {"model": "x:1b"}, "junk"]})],
        "/api/ps": [ok_json({"models": None})],
        "/api/version": [ok_json({"version": "0.12.6"})],
        "/api/show": [ok_json({"capabilities": ["completion", "thinking"]})],
    }
    async with ollama(replies) as backend:
        reply = await backend.chat({"model": "m", "stream": False})
        assert await reply.json() == {"message": {"content": "hi"}, "done": True}
        reply.close()
        assert await backend.model_names() == ["qwen3:8b", "x:1b"]
        assert await backend.loaded_model_names() == []
        assert await backend.version() == "0.12.6"
        assert await backend.capabilities("qwen3:8b") == ["completion", "thinking"]


async def test_an_http_error_carries_ollamas_message():
    body = b'{"error":"model \\"nope\\" not found"}'
    answer = b"HTTP/1.1 404 Not Found\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    async with ollama({"/api/chat": [answer]}) as backend:
        with pytest.raises(BackendStatus) as info:
            await backend.chat({"model": "nope"})
    assert info.value.status == 404
    assert info.value.kind == "http_404"
    assert info.value.detail == 'model "nope" not found'


async def test_a_silent_backend_is_a_timeout_and_a_cut_a_lost_connection():
    async with ollama({"/api/chat": [STREAM_HEAD], "/api/tags": []}) as backend:
        reply = await backend.chat({"model": "m"})
        with pytest.raises(BackendTimeout):
            await collect(reply, [])
        reply.close()
        with pytest.raises(BackendTimeout):
            await backend.model_names()
    async with ollama({"/api/chat": [STREAM_HEAD + b"5\r\nab", CLOSE]}) as backend:
        reply = await backend.chat({"model": "m"})
        with pytest.raises(BackendConnectionLost):
            await collect(reply, [])
        reply.close()


async def test_no_server_is_unreachable():
    backend = OllamaBackend("http://127.0.0.1:9", connect_timeout=1, read_timeout=1)
    await backend.start()
    with pytest.raises(BackendUnreachable):
        await backend.chat({"model": "m"})
    with pytest.raises(BackendUnreachable):
        await backend.version()
    await backend.close()


def test_used_before_start_is_a_clear_error():
    backend = OllamaBackend("http://127.0.0.1:9", connect_timeout=1, read_timeout=1)
    with pytest.raises(RuntimeError, match="before start"):
        asyncio.run(backend.version())


@pytest.mark.parametrize(
    ("line", "kind"),
    [(b"{", "bad_chunk"), (b"[1]", "bad_chunk"), (b'{"error": "boom"}', "stream_error")],
)
def test_parse_chunk_refuses(line, kind):
    with pytest.raises(BackendBadReply) as info:
        parse_chunk(line)
    assert info.value.kind == kind
