"""Log lines: one per record whatever the input, bounded, never a secret."""

from __future__ import annotations

import io
import json
import logging

import pytest

from vastllm.proxy import logs


@pytest.fixture
def capture():
    """configure() with its handler writing to a buffer; restores the loggers afterwards."""
    saved = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level)
        for name in ("vastllm", "uvicorn", "uvicorn.error")
    }
    buffers: list[io.StringIO] = []

    def setup(log_format: str = "text", secrets: tuple[str, ...] = ()) -> io.StringIO:
        logs.configure(log_format, "INFO", secrets)
        buffer = io.StringIO()
        for handler in logging.getLogger("vastllm").handlers:
            assert isinstance(handler, logging.StreamHandler)
            handler.setStream(buffer)
        buffers.append(buffer)
        return buffer

    yield setup
    logs.set_secrets(())
    for name, (handlers, level) in saved.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).setLevel(level)


ACCESS = logging.getLogger("vastllm.proxy.access")
FORGED_PATH = "/x\n2026-01-01 00:00:00,000 INFO vastllm.proxy: forged\r\x1b[31m\u2028end"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_newline_in_the_path_cannot_forge_a_line(capture, log_format):
    buffer = capture(log_format)
    ACCESS.info("%s %s %s", "GET", FORGED_PATH, 404, extra={"model": "a\nb", "status": 404})
    out = buffer.getvalue()
    assert out.count("\n") == 1
    for char in ("\r", "\x1b", "\u2028"):
        assert char not in out
    if log_format == "text":
        assert "GET /x\\n2026-01-01 00:00:00,000 INFO vastllm.proxy: forged\\r\\x1b[31m" in out
        assert "model=a\\nb" in out
    else:
        record = json.loads(out)
        assert record["message"].startswith("GET /x\\n2026")
        assert record["model"] == "a\\nb"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_long_fields_are_cut(capture, log_format):
    buffer = capture(log_format)
    huge = "m" * (1024 * 1024)
    ACCESS.info("POST %s 404", "/v1/messages/" + huge, extra={"model": huge, "tokens": (3, 4)})
    out = buffer.getvalue()
    assert out.count("\n") == 1
    assert len(out) < 8 * 1024
    assert "more chars]" in out
    if log_format == "json":
        assert json.loads(out)["tokens"] == [3, 4]
    else:
        assert "tokens=(3, 4)" in out


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_never_reach_the_log(capture, log_format):
    buffer = capture(log_format, ("sk-live-0123456789", "hunter2-pass"))
    log = logging.getLogger("vastllm.proxy")
    log.warning("connecting with redis://:hunter2-pass@h:6379/0 key sk-live-0123456789")
    log.info("x", extra={"header": "Bearer sk-live-0123456789"})
    try:
        raise ValueError("bad token sk-live-0123456789")
    except ValueError:
        log.exception("failed")
    out = buffer.getvalue()
    assert "hunter2" not in out
    assert "sk-live" not in out
    assert out.count("***") >= 4


def test_a_traceback_stays_under_its_record(capture):
    buffer = capture("text")
    try:
        raise RuntimeError("line one\n2026-01-01 00:00:00,000 INFO forged")
    except RuntimeError:
        logging.getLogger("vastllm.proxy").exception("unexpected error")
    lines = buffer.getvalue().splitlines()
    assert "unexpected error" in lines[0]
    assert all(line.startswith("    | ") for line in lines[1:])
    assert any("Traceback" in line for line in lines[1:])


def test_escape_and_cut_helpers():
    assert logs.escape("a\tb\x00c\x7f\u2029") == "a\\tb\\x00c\\x7f\\u2029"
    assert logs.cut("abcdef", 3) == "abc...[3 more chars]"
    assert logs.clean("é" * 10, 100) == "é" * 10  # printable non-ASCII stays as it is
