"""Cache behaviour, failure paths and error mappings, each against real processes on loopback."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

import anthropic
import httpx
import pytest
from proxy_helpers import API_KEY, BASIC, assert_anthropic_error, parse_sse, sse_text

from vastllm_lab.testing import free_port
from vastllm_lab.testing_services import RedisServer

MODEL = "qwen3-coder:30b"


def body(text: str, **extra) -> dict:
    return {**BASIC, "messages": [{"role": "user", "content": text}], **extra}


# ----------------------------------------------------------------------------- cache


def test_one_entry_serves_stream_and_non_stream(shared_proxy, http, ollama_emulator_session):
    request = body(f"cache me {uuid.uuid4()}", metadata={"user_id": "session-1"})
    first = http.post("/v1/messages", json=request)
    assert first.headers["x-cache"] == "miss"
    chats = ollama_emulator_session.stats().get("/api/chat", 0)

    streamed = http.post(
        "/v1/messages", json={**request, "stream": True, "metadata": {"user_id": "session-2"}}
    )
    assert streamed.headers["x-cache"] == "hit"
    events = parse_sse(streamed.text)
    assert [n for n, _ in events][:2] == ["message_start", "ping"]
    assert [n for n, _ in events][-2:] == ["message_delta", "message_stop"]
    assert sse_text(events) == first.json()["content"][0]["text"]
    assert events[0][1]["message"]["id"] != first.json()["id"]

    again = http.post("/v1/messages", json={**request, "model": "claude-opus-4-1"})
    assert again.headers["x-cache"] == "hit"
    assert again.json()["model"] == "claude-opus-4-1"
    assert again.json()["content"] == first.json()["content"]
    # a hit never reached the backend
    assert ollama_emulator_session.stats().get("/api/chat", 0) == chats

    bypass = http.post("/v1/messages", json=request, headers={"cache-control": "no-cache"})
    assert bypass.headers["x-cache"] == "bypass"
    assert ollama_emulator_session.stats().get("/api/chat", 0) == chats + 1


def test_streamed_miss_is_stored_for_later_non_stream(http):
    request = body(f"stream first {uuid.uuid4()}")
    streamed = http.post("/v1/messages", json={**request, "stream": True})
    assert streamed.headers["x-cache"] == "miss"
    later = http.post("/v1/messages", json=request)
    assert later.headers["x-cache"] == "hit"
    assert later.json()["content"][0]["text"] == sse_text(parse_sse(streamed.text))


def test_redis_killed_mid_run_then_back(ollama_emulator, redis_server, start_proxy):
    backend = ollama_emulator(preload=[MODEL])
    proxy = start_proxy(backend.url, redis_server.url)
    request = body("redis outage")
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        assert http.post("/v1/messages", json=request).headers["x-cache"] == "miss"
        assert http.post("/v1/messages", json=request).headers["x-cache"] == "hit"
        assert redis_server.keys()

        redis_server.kill()
        fresh = body("asked while redis is down")
        for _ in range(3):
            answer = http.post("/v1/messages", json=fresh)
            assert answer.status_code == 200
            assert answer.headers["x-cache"] == "bypass"
            assert answer.json()["content"][0]["text"]
        streamed = http.post("/v1/messages", json={**fresh, "stream": True, "max_tokens": 99})
        assert streamed.status_code == 200
        assert streamed.headers["x-cache"] == "bypass"
        assert parse_sse(streamed.text)[-1][0] == "message_stop"
        # an answer used a moment ago is still served from the proxy's memory
        assert http.post("/v1/messages", json=request).headers["x-cache"] == "hit"
        health = http.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert health.json()["redis"]["reachable"] is False

        redis_server.start()  # same port, empty
        # /health reuses a round of probes for 2 s (health.PROBE_TTL): ok within a few seconds
        deadline = time.monotonic() + 6
        while http.get("/health").json()["status"] != "ok":
            assert time.monotonic() < deadline, "health never saw redis come back"
            time.sleep(0.2)
        after = body("asked after redis is back")
        assert http.post("/v1/messages", json=after).headers["x-cache"] == "miss"
        assert http.post("/v1/messages", json=after).headers["x-cache"] == "hit"
        assert len(redis_server.keys()) == 1
    warnings = [line for line in proxy.log().splitlines() if "redis unavailable" in line]
    assert len(warnings) == 1  # at most one warning a minute


def test_corrupted_cache_entry_is_a_miss_not_a_5xx(ollama_emulator, redis_server, start_proxy):
    import redis

    backend = ollama_emulator(preload=[MODEL])
    request = body("corrupted entry")
    first = start_proxy(backend.url, redis_server.url)
    with httpx.Client(base_url=first.url, timeout=30) as http:
        assert http.post("/v1/messages", json=request).headers["x-cache"] == "miss"
    (key,) = redis_server.keys()
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.set(key, b"\x00 not json")
    finally:
        client.close()
    fresh = start_proxy(backend.url, redis_server.url)  # empty memory tier: reads Redis
    with httpx.Client(base_url=fresh.url, timeout=30) as http:
        answer = http.post("/v1/messages", json=request)
        assert answer.status_code == 200
        assert answer.headers["x-cache"] == "miss"
        assert answer.json()["content"][0]["text"]
        assert http.post("/v1/messages", json=request).headers["x-cache"] == "hit"


def test_cache_hit_gives_tool_use_blocks_fresh_ids(shared_proxy, http):
    request = {
        **BASIC,
        "messages": [{"role": "user", "content": f"use get_weather {uuid.uuid4().hex}"}],
        "tools": [
            {
                "name": "get_weather",
                "description": "weather",
                "input_schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            }
        ],
    }
    first = http.post("/v1/messages", json=request)
    again = http.post("/v1/messages", json=request)
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
    ids = [
        [b["id"] for b in answer.json()["content"] if b["type"] == "tool_use"]
        for answer in (first, again)
    ]
    assert ids[0]
    assert ids[1]
    assert ids[0] != ids[1]
    assert again.json()["stop_reason"] == "tool_use"


def test_cache_disabled_answers_bypass(ollama_emulator, start_proxy):
    backend = ollama_emulator(preload=[MODEL])
    proxy = start_proxy(backend.url, "")
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        for _ in range(2):
            assert http.post("/v1/messages", json=body("no cache")).headers["x-cache"] == "bypass"
        health = http.get("/health").json()
        assert health["redis"] == {"enabled": False, "reachable": None}
        assert health["status"] == "ok"


# ----------------------------------------------------------------------------- backend failures


def test_backend_killed_mid_stream(ollama_emulator, redis_server, start_proxy):
    # chunk_delay: the chunks arrive before the crash in reads of their own (what reaches the
    # proxy in the same read as the connection's end is not relayed, an aiohttp trait)
    backend = ollama_emulator(
        preload=[MODEL], faults={"crash_after_chunks": 3, "chunk_delay": 0.05}
    )
    proxy = start_proxy(backend.url, redis_server.url)
    request = body("cut me off", stream=True)
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        response = http.post("/v1/messages", json=request)
        assert response.status_code == 200
        events = parse_sse(response.text)
        names = [n for n, _ in events]
        assert names[:2] == ["message_start", "ping"]
        assert "content_block_delta" in names
        assert names[-1] == "error"
        assert events[-1][1]["error"]["type"] in ("api_error", "overloaded_error")
        assert "message_stop" not in names
        # nothing incomplete was stored: the next request is a miss again
        backend.clear_faults()
        retry = http.post("/v1/messages", json=request)
        assert retry.headers["x-cache"] == "miss"
        assert parse_sse(retry.text)[-1][0] == "message_stop"
        metrics = http.get("/metrics").text
        assert 'vastllm_upstream_errors_total{kind="stream_cut"} 1' in metrics

    with anthropic.Anthropic(base_url=proxy.url, api_key="unused", max_retries=0) as client:
        backend.set_faults({"crash_after_chunks": 2})
        with (
            pytest.raises(anthropic.APIStatusError),
            client.messages.stream(
                **{k: v for k, v in body("sdk sees the error").items()}
            ) as stream,
        ):
            stream.get_final_message()


@pytest.mark.parametrize("streamed", [False, True])
def test_backend_errors_map_to_anthropic_errors(ollama_emulator, start_proxy, streamed):
    backend = ollama_emulator(preload=[MODEL])
    proxy = start_proxy(backend.url, "")
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        backend.set_faults({"busy": True})
        assert_anthropic_error(
            http.post("/v1/messages", json=body("busy", stream=streamed)), 529, "overloaded_error"
        )
        backend.clear_faults()
        backend.set_faults({"chat_error": "llama runner process has terminated"})
        error = assert_anthropic_error(
            http.post("/v1/messages", json=body("boom", stream=streamed)), 500, "api_error"
        )
        assert "llama runner process has terminated" in error["error"]["message"]
        backend.clear_faults()
        backend.stop()
        down = assert_anthropic_error(
            http.post("/v1/messages", json=body("down", stream=streamed)), 529, "overloaded_error"
        )
        assert "unreachable" in down["error"]["message"]
        health = http.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "down"
        assert health.json()["ollama"]["reachable"] is False
        assert http.get("/health/readiness").status_code == 503
        assert http.get("/health/liveness").status_code == 200


def test_client_disconnect_cancels_upstream(ollama_emulator, redis_server, start_proxy):
    backend = ollama_emulator(preload=[MODEL], faults={"chunk_delay": 0.4})
    proxy = start_proxy(backend.url, redis_server.url)
    request = body("slow answer please", stream=True)
    started = time.monotonic()
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        with http.stream("POST", "/v1/messages", json=request) as response:
            for line in response.iter_lines():
                if "content_block_delta" in line:
                    break  # the client walks away after the first token
        deadline = time.monotonic() + 10
        finished = []
        while time.monotonic() < deadline and not finished:
            finished = re.findall(r"\|\s+200 \|\s+([0-9.]+)ms \|.*\"/api/chat\"", backend.log())
            time.sleep(0.1)
        assert finished, backend.log()
        # the whole answer takes >= 10 chunks x 0.4 s; the backend stopped long before that
        assert float(finished[-1]) < 2500
        assert time.monotonic() - started < 6
        metrics = http.get("/metrics").text
        assert 'vastllm_requests_total{route="messages",status="499"} 1' in metrics
    assert redis_server.keys() == []  # an abandoned answer is not cached


def post_and_leave(proxy_url: str, request: dict, seconds: float) -> None:
    """POST ``request`` to /v1/messages on a raw connection and close it ``seconds`` later,
    before any answer."""
    payload = json.dumps(request).encode()
    head = (
        f"POST /v1/messages HTTP/1.1\r\nhost: proxy\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    ).encode()
    host, port = proxy_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + payload)
        time.sleep(seconds)


def wait_for_abandoned(proxy_url: str, within: float) -> None:
    """The proxy counts one abandoned (499) request within ``within`` seconds."""
    left = time.monotonic()
    abandoned = 'vastllm_requests_total{route="messages",status="499"} 1'
    while abandoned not in (metrics := httpx.get(proxy_url + "/metrics").text):
        assert time.monotonic() - left < within, metrics
        time.sleep(0.1)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_gone_before_the_first_token_stops_the_generation(
    ollama_emulator, start_proxy, stream
):
    """The client closes its connection while the backend is still before its first token
    (nothing has been written to the client yet, so no failed write can tell): the proxy
    notices the closed connection at once and drops the backend's connection, which stops
    the generation; the request counts as 499."""
    backend = ollama_emulator(preload=[MODEL], faults={"chunk_delay": 1.5})  # >= 15 s in all
    proxy = start_proxy(backend.url, "")
    request = body(f"abandoned before the first token {stream}", stream=stream)
    post_and_leave(proxy.url, request, 0.5)  # the proxy has sent the chat and waits
    left = time.monotonic()
    wait_for_abandoned(proxy.url, 3)  # the request ended, not after the 15 s generation
    if stream:  # the double stops generating when its connection is dropped mid-stream
        finished: list[str] = []
        while not finished:
            assert time.monotonic() - left < 10, backend.log()
            finished = re.findall(r"\|\s+200 \|\s+([0-9.]+)ms \|.*\"/api/chat\"", backend.log())
            time.sleep(0.1)
        assert float(finished[-1]) < 4000  # stopped long before its 15 s


def test_a_client_gone_while_the_cache_is_looked_up_gets_no_generation(
    ollama_emulator, start_proxy, tmp_path
):
    """The client goes away while the proxy still waits for Redis (hung: SIGSTOP), before it
    watches the connection: the loss is noticed when it starts watching, and the request ends
    at once instead of generating for nobody."""
    backend = ollama_emulator(preload=[MODEL], faults={"chunk_delay": 1.5})  # >= 15 s in all
    redis = RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    redis.start()
    try:
        proxy = start_proxy(backend.url, redis.url)
        assert redis.process is not None
        redis.process.send_signal(signal.SIGSTOP)  # the lookup now waits for the 1 s timeout
        post_and_leave(proxy.url, body("gone during the cache lookup"), 0.2)
        wait_for_abandoned(proxy.url, 4)  # not after the 15 s generation
    finally:
        if redis.process is not None:
            redis.process.send_signal(signal.SIGCONT)
        redis.kill()


# ----------------------------------------------------------------------------- request errors


def test_request_errors(shared_proxy, http):
    malformed = http.post(
        "/v1/messages", content=b'{"model": ', headers={"content-type": "application/json"}
    )
    assert (
        "malformed JSON"
        in assert_anthropic_error(malformed, 400, "invalid_request_error")["error"]["message"]
    )
    invalid = http.post("/v1/messages", json={**BASIC, "max_tokens": "lots"})
    assert assert_anthropic_error(invalid, 400, "invalid_request_error")["error"][
        "message"
    ].startswith("max_tokens:")
    nested = http.post(
        "/v1/messages", json={**BASIC, "messages": [{"role": "robot", "content": "x"}]}
    )
    assert (
        "messages.0.role"
        in assert_anthropic_error(nested, 400, "invalid_request_error")["error"]["message"]
    )
    big = http.post("/v1/messages", json=body("x" * 300_000))
    assert_anthropic_error(big, 413, "request_too_large")
    assert big.headers["x-cache"] == "bypass"  # every answer says whether the cache served it
    assert_anthropic_error(http.get("/v2/nothing"), 404, "not_found_error")
    assert_anthropic_error(http.get("/v1/messages"), 405, "invalid_request_error")
    count_missing = http.post(
        "/v1/messages/count_tokens", json={"model": "gpt-4o", "messages": BASIC["messages"]}
    )
    assert_anthropic_error(count_missing, 404, "not_found_error")


def test_logs_have_no_prompt_and_no_key(shared_proxy, http):
    secret_prompt = f"my-private-prompt-{uuid.uuid4()}"
    http.post("/v1/messages", json=body(secret_prompt))
    log = shared_proxy.log()
    assert "vastllm-proxy listening on http://127.0.0.1:" in log
    assert "cache on" in log
    assert secret_prompt not in log
    assert API_KEY not in log
    assert "POST /v1/messages 200" in log


# ----------------------------------------------------------------------------- start-up refusals


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--host", "0.0.0.0"], {}, "refusing to listen on non-loopback address '0.0.0.0'"),
        ([], {"VASTLLM_MODEL_MAP": "{oops"}, "VASTLLM_MODEL_MAP"),
        ([], {"VASTLLM_API_KEY_FILE": "/nonexistent/key"}, "cannot read key file"),
        (["--port", "eighty"], {}, "--port: must be an integer"),
    ],
)
def test_refuses_to_start(args, env, message):
    result = subprocess.run(
        [sys.executable, "-m", "vastllm.proxy", "--port", str(free_port()), *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith("vastllm-proxy: error:")
    assert "Traceback" not in result.stderr
