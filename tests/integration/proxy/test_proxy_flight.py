"""Single-flight, pings and the first-token timeout through the real server, against the Ollama
lab double (its request stats count the generations) and a real redis-server."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
from proxy_helpers import BASIC, assert_anthropic_error, parse_sse, sse_text

MODEL = "qwen3-coder:30b"


def body(text: str, **extra) -> dict:
    return {**BASIC, "messages": [{"role": "user", "content": text}], **extra}


async def _concurrently(url: str, requests: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(requests))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        return await asyncio.gather(*(http.post("/v1/messages", json=r) for r in requests))


def test_fifty_identical_requests_on_a_cold_cache_make_one_generation(
    ollama_emulator, redis_server, start_proxy
):
    backend = ollama_emulator(preload=[MODEL], faults={"chunk_delay": 0.02})
    proxy = start_proxy(backend.url, redis_server.url)
    request = body(f"single flight {uuid.uuid4()}", max_tokens=40)
    backend.reset_stats()
    answers = asyncio.run(
        _concurrently(proxy.url, [{**request, "stream": bool(n % 2)} for n in range(50)])
    )
    assert backend.stats().get("/api/chat", 0) == 1
    texts = set()
    for n, answer in enumerate(answers):
        assert answer.status_code == 200, answer.text
        if n % 2:
            events = parse_sse(answer.text)
            assert [name for name, _ in events][-1] == "message_stop"
            texts.add(sse_text(events))
        else:
            texts.add(answer.json()["content"][0]["text"])
    assert len(texts) == 1
    assert texts != {""}


def test_pings_while_the_first_token_is_awaited_then_the_answer(ollama_emulator, start_proxy):
    # The first token takes >= 3 s (12 intervals of 0.25 s); the stream must start with pings
    # long before it. Bounds in intervals, loose enough for a loaded 2-core machine, but a
    # proxy that sends no pings (first byte with the first token, >= 3 s) fails them.
    interval, delay = 0.25, 3.0
    backend = ollama_emulator(preload=[MODEL], faults={"chunk_delay": delay})  # per chunk
    proxy = start_proxy(backend.url, "", ping_interval=interval)
    request = body(f"a slow start {uuid.uuid4()}", stream=True, max_tokens=2)
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        started = time.monotonic()
        with http.stream("POST", "/v1/messages", json=request) as response:
            first_byte = first_token = None
            raw = b""
            for piece in response.iter_bytes():
                now = time.monotonic() - started
                first_byte = first_byte or now
                raw += piece
                if first_token is None and b"content_block_delta" in raw:
                    first_token = now
    events = parse_sse(raw.decode())
    names = [name for name, _ in events]
    assert first_byte is not None
    assert first_token is not None
    assert first_token >= delay * 0.9, first_token  # the backend really was slow
    assert first_byte < 8 * interval, first_byte  # pings began within a few intervals
    assert first_token - first_byte > 2 * interval, (first_byte, first_token)
    assert names[0] == "message_start"
    assert names[: names.index("content_block_start")].count("ping") >= 3
    assert names[-1] == "message_stop"
    assert sse_text(events)


def test_the_first_token_timeout_ends_a_hung_generation(ollama_emulator, start_proxy):
    backend = ollama_emulator(preload=[MODEL], faults={"chunk_delay": 20})
    proxy = start_proxy(backend.url, "", ping_interval=0.3, first_token_timeout=1)
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        started = time.monotonic()
        streamed = http.post("/v1/messages", json=body("hung", stream=True))
        waited = time.monotonic() - started
        events = parse_sse(streamed.text)
        assert waited < 5
        assert [name for name, _ in events][:2] == ["message_start", "ping"]
        assert events[-1][0] == "error"
        assert events[-1][1]["error"]["type"] == "overloaded_error"
        # without pings yet (a non-streaming request whose stop sequences stream from Ollama)
        answer = http.post("/v1/messages", json=body("hung", stop_sequences=["zz"]))
        assert_anthropic_error(answer, 529, "overloaded_error")
