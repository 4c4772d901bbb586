"""``OllamaBackend`` against a scripted HTTP server on loopback: what the routes rely on, whatever
HTTP client the backend uses (NDJSON framing, error statuses, transport failures)."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
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
from vastllm.proxy.translate_response import anthropic_error

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


async def test_blank_lines_are_skipped_and_a_line_may_span_several_reads():
    whole = b'{"message":{"content":"a"},"done":false}\n \r\n\n{"done":true,"eval_count":1}\n'
    # three writes: the first two inside the same line (no newline in either)
    writes: list[bytes | None] = [
        STREAM_HEAD + b"%x\r\n%s\r\n" % (5, whole[:5]),
        b"%x\r\n%s\r\n" % (10, whole[5:15]),
        chunked(whole[15:]),
    ]
    async with ollama({"/api/chat": writes}) as backend:
        reply = await backend.chat({"model": "m", "stream": True})
        chunks = [chunk async for batch in reply.batches() for chunk in batch]
        await reply.finish()
        reply.close()
    assert chunks == [{"message": {"content": "a"}, "done": False}, {"done": True, "eval_count": 1}]


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


# ------------------------------------------------------------------ defects of the old client
# Issue 8: each of these failed on the hand-written HTTP/1.1 client (upstream.py) it replaced.


@asynccontextmanager
async def scripted(handle, ssl_context=None) -> AsyncIterator[int]:
    """A loopback server running ``handle(reader, writer)`` per connection; yields its port."""
    writers: list[asyncio.StreamWriter] = []

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(run, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await asyncio.sleep(0.01)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head (the body, if any, is read and dropped)."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


async def test_an_interim_1xx_answer_is_skipped_and_answers_stay_with_their_requests():
    async def handle(reader, writer):
        for n in (1, 2):
            await read_request(reader)
            if n == 1:  # a reverse proxy's Early Hints before the real answer
                writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n")
            writer.write(ok_json({"message": {"content": f"answer {n}"}, "done": True}))
            await writer.drain()
        await reader.read()

    async with scripted(handle) as port:
        backend = OllamaBackend(f"http://127.0.0.1:{port}", connect_timeout=1, read_timeout=2)
        await backend.start()
        try:
            answers = []
            for _ in range(2):
                reply = await backend.chat({"model": "m", "stream": False})
                answers.append((await reply.json())["message"]["content"])
                reply.close()
        finally:
            await backend.close()
    assert answers == ["answer 1", "answer 2"]


async def test_credentials_in_the_url_are_sent_as_basic_auth():
    seen: list[bytes] = []

    async def handle(reader, writer):
        head = await read_request(reader)
        seen.extend(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"authorization:")
        )
        writer.write(ok_json({"version": "0.12.6"}))
        await writer.drain()
        await reader.read()

    async with scripted(handle) as port:
        backend = OllamaBackend(
            f"http://ollama:p%40ss@127.0.0.1:{port}/", connect_timeout=1, read_timeout=2
        )
        await backend.start()
        try:
            assert await backend.version() == "0.12.6"
        finally:
            await backend.close()
    assert seen == [b"Basic " + base64.b64encode(b"ollama:p@ss")]
    assert "p%40ss" not in backend.url
    assert "ollama" not in backend.url


async def test_a_chat_request_is_never_sent_twice_when_the_connection_drops():
    chats: list[bytes] = []

    async def handle(reader, writer):
        while True:
            head = await read_request(reader)
            if head.startswith(b"POST /api/chat"):
                chats.append(head)
                return  # accepted, then the connection drops before any answer
            writer.write(ok_json({"version": "0.12.6"}))  # keeps the connection alive
            await writer.drain()

    async with scripted(handle) as port:
        backend = OllamaBackend(f"http://127.0.0.1:{port}", connect_timeout=1, read_timeout=2)
        await backend.start()
        try:
            await backend.version()  # the chat then goes on a kept-alive connection
            with pytest.raises(BackendConnectionLost) as info:
                await backend.chat({"model": "m", "stream": True})
        finally:
            await backend.close()
    assert len(chats) == 1
    error = anthropic_error(info.value, "m")
    assert (error.status, error.error_type) == (529, "overloaded_error")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no TLS fixture")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def hung_tls_server(cert, key, stop: threading.Event) -> int:
    """A TLS server (a thread, blocking sockets) that answers a head and one chunk, then hangs:
    it reads nothing more, so it never answers a TLS close either."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            raw, _ = listener.accept()
            with context.wrap_socket(raw, server_side=True) as conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                conn.sendall(STREAM_HEAD + b"%x\r\n%s\r\n" % (3, b"{}\n"))
                stop.wait(20)

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


async def test_the_read_timeout_of_an_https_backend_fires_on_time_as_a_timeout(tls_files):
    cert, key = tls_files
    stop = threading.Event()
    port = hung_tls_server(cert, key, stop)
    backend = OllamaBackend(
        f"https://127.0.0.1:{port}",
        connect_timeout=1,
        read_timeout=1,
        ssl_context=ssl.create_default_context(cafile=str(cert)),
    )
    await backend.start()
    try:
        reply = await backend.chat({"model": "m"})
        started = time.monotonic()
        with pytest.raises(BackendTimeout):
            async with asyncio.timeout(8):  # the old client waited ~30 s for the TLS close
                await collect(reply, [])
        waited = time.monotonic() - started
        reply.close()
    finally:
        stop.set()
        await backend.close()
    assert 0.9 <= waited < 2.5


async def chat_and_collect(backend: OllamaBackend) -> None:
    reply = await backend.chat({"model": "m"})
    try:
        await collect(reply, [])
    finally:
        reply.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"-6\r\nxx\r\n0\r\n\r\n",  # a negative size once looped forever without awaiting
        b"\r\nhello\r\n0\r\n\r\n",  # an empty size line is not the end of the body
        b"5\r\nhelloXX0\r\n\r\n",  # chunk data not followed by CRLF
    ],
)
async def test_a_broken_chunked_body_is_a_lost_connection_never_a_hang(raw: bytes) -> None:
    async with ollama({"/api/chat": [STREAM_HEAD + raw]}) as backend:
        with pytest.raises(BackendConnectionLost):  # at the head already, or in the body
            await asyncio.wait_for(chat_and_collect(backend), 3)
