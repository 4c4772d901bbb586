"""The proxy's port under a hostile or careless network (issue 8): bounded connections, heads,
bodies and time; every error Anthropic-shaped JSON; logs that cannot be forged.

Everything runs on 127.0.0.1: the proxy as a process (``start_proxy``), raw sockets as clients.
The load test holds 5,000 idle and slow connections (``slow``); it raises the open-files limit
of the test process (and so of the proxy, its child) within the hard limit.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import socket
import time
from pathlib import Path

import httpx
import pytest
from proxy_helpers import API_KEY

DEAD_BACKEND = "http://127.0.0.1:9"  # nothing listens there: routes that need no backend only


# --------------------------------------------------------------------------- raw HTTP helpers


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def raw_exchange(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send ``payload``, read until the server closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def assert_json_error(raw: bytes, status: int, error_type: str = "invalid_request_error") -> dict:
    got, headers, body = split_response(raw)
    assert got == status, raw[:500]
    assert headers["content-type"] == "application/json", headers
    data = json.loads(body[: int(headers["content-length"])])
    assert data["type"] == "error"
    assert data["error"]["type"] == error_type
    assert data["error"]["message"]
    return data


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


# --------------------------------------------------------------------------- errors are JSON


@pytest.mark.parametrize(
    "payload",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"G\x00T / HTTP/1.1\r\n\r\n",
    ],
    ids=["garbage", "header-without-colon", "bad-version", "bad-chunk", "nul-in-method"],
)
def test_malformed_http_gets_an_anthropic_error(start_proxy, payload):
    proxy = start_proxy(DEAD_BACKEND)
    assert_json_error(raw_exchange(proxy.port, payload), 400)
    assert "Traceback" not in proxy.log()


def test_websocket_upgrade_gets_an_anthropic_error(start_proxy):
    proxy = start_proxy(DEAD_BACKEND)
    raw = raw_exchange(
        proxy.port,
        b"GET /v1/messages HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    body = assert_json_error(raw, 400)
    assert "WebSocket" in body["error"]["message"]


def test_other_upgrades_are_ignored_and_served_over_http11(start_proxy):
    proxy = start_proxy(DEAD_BACKEND)
    raw = raw_exchange(
        proxy.port,
        b"GET /health/liveness HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    )
    status, headers, body = split_response(raw)
    assert (status, body) == (200, b'{"status":"ok"}')
    assert headers["connection"] == "close"


def test_head_health_is_200(start_proxy, ollama_emulator_session):
    proxy = start_proxy(ollama_emulator_session.url)
    for path in ("/health", "/health/liveness", "/health/readiness", "/"):
        response = httpx.head(proxy.url + path, timeout=10)
        assert response.status_code == 200, path
        assert response.content == b""
        assert int(response.headers["content-length"]) > 0


# --------------------------------------------------------------------------- bodies


def test_body_cap_per_route(start_proxy):
    proxy = start_proxy(
        DEAD_BACKEND, max_request_bytes=4000, max_other_body_bytes=100, api_key=API_KEY
    )
    headers = {"x-api-key": API_KEY, "content-type": "application/json"}
    with httpx.Client(base_url=proxy.url, headers=headers, timeout=10) as http:
        # Declared too large: answered before a byte of the body is read.
        for path, size in (("/v1/messages", 4001), ("/v1/messages/count_tokens", 4001)):
            response = http.post(path, content=b"x" * size)
            assert response.status_code == 413, path
            assert response.json()["error"]["type"] == "request_too_large"
            assert "4000 bytes" in response.json()["error"]["message"]
        # Other routes take tiny bodies only.
        response = http.request("GET", "/health/liveness", content=b"x" * 101)
        assert response.status_code == 413
        assert "100 bytes" in response.json()["error"]["message"]
        assert http.request("GET", "/health/liveness", content=b"x" * 100).status_code == 200
        # A body of the allowed size goes through to the app (here: malformed JSON -> 400).
        response = http.post("/v1/messages", content=b"x" * 4000)
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"

        # Chunked (no Content-Length): counted as it arrives.
        def chunks():
            for _ in range(10):
                yield b"y" * 500

        response = http.post("/v1/messages", content=chunks())
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "request_too_large"


@pytest.mark.parametrize("key_header", [b"", b"x-api-key: wrong\r\n"], ids=["no-key", "bad-key"])
def test_a_20_mib_body_without_the_key_gets_401_before_it_is_read(start_proxy, key_header):
    """A key-less client declares 20 MiB, sends 1 MiB and stalls: the 401 comes at once (the
    proxy does not wait for, nor buffer, the body), Anthropic-shaped, and memory stays flat."""
    proxy = start_proxy(DEAD_BACKEND, api_key=API_KEY, body_timeout=20)
    pid = proxy.process.pid
    before = rss_kb(pid)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            + key_header
            + b"Content-Length: %d\r\n\r\n" % (20 << 20)
        )
        sock.sendall(b"x" * (1 << 20))
        sock.settimeout(5)
        raw = b""
        while b"\r\n\r\n" not in raw or len(raw.partition(b"\r\n\r\n")[2]) < int(
            split_response(raw)[1].get("content-length", "1")
        ):
            chunk = sock.recv(65536)  # TimeoutError here: the proxy waited for the body
            assert chunk, raw
            raw += chunk
    waited = time.monotonic() - started
    data = assert_json_error(raw, 401, "authentication_error")
    assert "API key" in data["error"]["message"]
    assert split_response(raw)[1]["x-should-retry"] == "false"
    assert waited < 3, waited
    assert rss_kb(pid) - before < 8 * 1024, (before, rss_kb(pid))
    # The key-holder is served as before, also with a large body (here: malformed JSON -> 400).
    response = httpx.post(
        proxy.url + "/v1/messages", content=b"x" * (2 << 20), headers={"x-api-key": API_KEY}
    )
    assert response.status_code == 400


def test_a_stalled_body_gets_408(start_proxy):
    proxy = start_proxy(DEAD_BACKEND, body_timeout=1)
    started = time.monotonic()
    raw = raw_exchange(
        proxy.port,
        b'POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"a":',
        timeout=10,
    )
    assert_json_error(raw, 408)
    assert 0.9 < time.monotonic() - started < 5


# --------------------------------------------------------------------------- heads and time


def test_128_mib_header_gets_431_and_memory_comes_back(start_proxy):
    proxy = start_proxy(DEAD_BACKEND)
    pid = proxy.process.pid
    before = rss_kb(pid)
    sent = 0
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET /health/liveness HTTP/1.1\r\nHost: x\r\nX-Big: ")
        piece = b"a" * (1024 * 1024)
        raw = b""
        while sent < 128 * 1024 * 1024:
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
            try:
                raw = sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            break
        sock.settimeout(5)
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            raw += chunk
    assert_json_error(raw, 431)
    assert sent < 8 * 1024 * 1024, "the proxy read far beyond its header limit"
    time.sleep(0.5)
    after = rss_kb(pid)
    print(f"431 after {sent / 2**20:.0f} MiB sent; RSS {before} -> {after} kB")
    assert after - before < 16 * 1024, (before, after)
    assert httpx.get(proxy.url + "/health/liveness").status_code == 200


def test_many_headers_count_too(start_proxy):
    proxy = start_proxy(DEAD_BACKEND, max_header_bytes=2048)
    head = b"GET /health/liveness HTTP/1.1\r\nHost: x\r\n" + b"X-A: bbbbbbbbbbbbbbbb\r\n" * 120
    assert_json_error(raw_exchange(proxy.port, head + b"\r\n"), 431)
    small = b"GET /health/liveness HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert split_response(raw_exchange(proxy.port, small))[0] == 200


def test_header_timeout_closes_idle_and_half_sent_heads(start_proxy):
    proxy = start_proxy(DEAD_BACKEND, header_timeout=1)
    idle = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    slow = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    started = time.monotonic()
    slow.sendall(b"GET /health/liveness HTTP/1.1\r\nHost: x\r\n")
    for _ in range(3):  # a byte now and then does not extend the deadline
        time.sleep(0.3)
        try:
            slow.sendall(b"X")
        except OSError:
            break
    assert idle.recv(100) == b""  # closed without a word
    idle_closed = time.monotonic() - started
    raw = b""
    while chunk := slow.recv(65536):
        raw += chunk
    assert_json_error(raw, 408)
    assert 0.8 < idle_closed < 3
    idle.close()
    slow.close()


def test_keepalive_timeout_closes_idle_connections(start_proxy):
    proxy = start_proxy(DEAD_BACKEND, keepalive_timeout=1, header_timeout=30)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"GET /health/liveness HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = b""
        while not raw.endswith(b'{"status":"ok"}'):  # head and body may come apart
            raw += sock.recv(65536)
        assert raw.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert 0.8 < time.monotonic() - started < 3


def test_connection_cap_refuses_with_503(start_proxy):
    proxy = start_proxy(DEAD_BACKEND, max_connections=20)
    held = [socket.create_connection(("127.0.0.1", proxy.port), timeout=5) for _ in range(20)]
    try:
        time.sleep(0.2)
        extra = raw_exchange(proxy.port, b"GET /health/liveness HTTP/1.1\r\nHost: x\r\n\r\n")
        assert_json_error(extra, 503, "overloaded_error")
        assert "refused 1 connection(s) with 503" in proxy.log()
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(proxy.url + "/health/liveness").status_code == 200


# --------------------------------------------------------------------------- logs


def test_logs_cannot_be_forged_and_stay_short(start_proxy):
    proxy = start_proxy(DEAD_BACKEND, api_key=API_KEY)
    headers = {"x-api-key": API_KEY}
    forged = "/x%0A2026-01-01%2000:00:00,000%20INFO%20vastllm.proxy:%20forged%0D%1B[31m"
    httpx.get(proxy.url + forged)
    body = {"model": "m" * (1024 * 1024), "max_tokens": 5, "messages": []}
    httpx.post(proxy.url + "/v1/messages", json=body, headers=headers, timeout=30)
    time.sleep(0.2)
    lines = proxy.log().splitlines()
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")
    for line in lines:
        assert stamp.match(line) or line.startswith("    | "), line[:200]
        assert len(line) < 8192, line[:200]
        assert "\x1b" not in line
        assert "\r" not in line
    assert not any(line.startswith("2026-01-01") for line in lines)
    assert any("/x\\n2026-01-01" in line for line in lines)


# --------------------------------------------------------------------------- under load


async def _get(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /health/liveness HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 5)
        return split_response(raw)[0]
    finally:
        writer.close()


@pytest.mark.slow
async def test_a_normal_client_is_served_while_5000_idle_and_slow_connections_are_held(
    start_proxy,
):
    """5,000 connections held open (half idle, half sending a header byte every second): a
    normal client polling /health/liveness gets 200 every time; after the header timeout the
    proxy has closed them all."""
    held_count = 5000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = held_count + 1024
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"open-files hard limit {hard} < {wanted}")
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    header_timeout = 15.0
    proxy = start_proxy(DEAD_BACKEND, header_timeout=header_timeout)
    pid = proxy.process.pid
    rss_before = rss_kb(pid)
    fds_before = open_fds(pid)

    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    opened_at = time.monotonic()
    for _start in range(0, held_count, 250):
        batch = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(250))
        )
        held.extend(batch)
    slow = held[::2]
    for _reader, writer in slow:
        writer.write(b"GET /health/liveness HTTP/1.1\r\nHost: x\r\n")

    opened_in = time.monotonic() - opened_at
    statuses: list[int | str] = []
    latencies: list[float] = []
    peak_fds = 0
    peak_rss = 0
    # Poll while the connections are held (well within the header timeout).
    poll_until = opened_at + header_timeout - 2.5
    tick = 0
    while time.monotonic() < poll_until:
        asked = time.perf_counter()
        try:
            statuses.append(await asyncio.wait_for(_get(proxy.port), 5))
        except Exception as exc:  # any failure counts against the normal client
            statuses.append(type(exc).__name__)
        latencies.append(time.perf_counter() - asked)
        tick += 1
        if tick % 10 == 0:
            for _reader, writer in slow:
                if not writer.is_closing():
                    writer.write(b"X")
            peak_fds = max(peak_fds, open_fds(pid))
            peak_rss = max(peak_rss, rss_kb(pid))
        await asyncio.sleep(0.02)
    peak_fds = max(peak_fds, open_fds(pid))
    ok = sum(1 for status in statuses if status == 200)
    report = (
        f"held {held_count} connections (opened in {opened_in:.1f} s); "
        f"proxy fds {fds_before} -> peak {peak_fds}; normal client {ok}/{len(statuses)} 200s, "
        f"latency median {sorted(latencies)[len(latencies) // 2] * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms; RSS {rss_before} -> peak {peak_rss} kB"
    )
    print(report)
    assert peak_fds >= fds_before + held_count - 50, report
    assert len(statuses) >= 50, report
    assert ok == len(statuses), report

    # Past the header timeout, every held connection has been closed by the proxy.
    await asyncio.sleep(max(0.0, opened_at + header_timeout + 2.5 - time.monotonic()))

    async def closed(reader: asyncio.StreamReader) -> bool:
        try:
            while await asyncio.wait_for(reader.read(65536), 2):
                pass
        except (ConnectionResetError, TimeoutError):
            return False
        return True

    results = await asyncio.gather(*(closed(reader) for reader, _writer in held))
    for _reader, writer in held:
        writer.close()
    assert all(results), f"{results.count(False)} connections still open"
    await asyncio.sleep(0.5)
    assert open_fds(pid) <= fds_before + 10
    assert await _get(proxy.port) == 200
    print(f"after the header timeout: proxy fds {open_fds(pid)}, RSS {rss_kb(pid)} kB")
