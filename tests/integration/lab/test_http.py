"""HTTP/1.1 behaviour of the lab double's lean request parser: framing, keep-alive, errors."""

import socket


def exchange(port, data, read_until_close=False):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        if not read_until_close:
            return sock.recv(65536)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_malformed_http_framing_gets_a_400(ollama_emulator):
    emu = ollama_emulator()
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(b"POST /api/show HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"invalid request body framing" in answer
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/show HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'10\r\n{"model": "nope"\r\n1\r\n}\r\n0\r\n\r\n'
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 404")  # a chunked request body is read correctly
    assert b"model 'nope' not found" in answer


def test_bad_request_lines_and_headers(ollama_emulator):
    emu = ollama_emulator()
    assert exchange(emu.port, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert exchange(emu.port, b"GET / HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 400")
    bad_header = exchange(emu.port, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
    assert bad_header.startswith(b"HTTP/1.1 400")
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n"
    assert exchange(emu.port, many).startswith(b"HTTP/1.1 431")
    assert emu.request("GET", "/api/version")[0] == 200  # the server is fine afterwards


def test_connection_close_and_http_1_0(ollama_emulator):
    emu = ollama_emulator()
    closed = exchange(emu.port, b"GET /api/version HTTP/1.1\r\nConnection: close\r\n\r\n", True)
    assert b"Connection: close" in closed
    assert closed.endswith(b"}")
    old = exchange(emu.port, b"GET /api/version HTTP/1.0\r\n\r\n", True)  # closes after one
    assert old.startswith(b"HTTP/1.1 200")
    kept = exchange(emu.port, b"GET /api/version HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert b"Connection: keep-alive" in kept
    streamed = exchange(
        emu.port,
        b'POST /api/pull HTTP/1.0\r\nContent-Length: 16\r\n\r\n{"model": "x:1"}',
        True,
    )
    assert b"Transfer-Encoding" not in streamed  # HTTP/1.0: no chunking, close-delimited
    assert streamed.endswith(b'{"error":"pull model manifest: file does not exist"}\n')


def test_expect_100_continue(ollama_emulator):
    emu = ollama_emulator()
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/show HTTP/1.1\r\nContent-Length: 15\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 100")
        sock.sendall(b'{"model": "no"}')
        assert sock.recv(4096).startswith(b"HTTP/1.1 404")
