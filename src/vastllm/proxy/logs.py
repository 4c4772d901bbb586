"""Logging setup: plain text or one JSON object per line. Prompt text is never logged.

Every record is one line whatever a client sends: control characters in the message and the
fields are escaped (a ``%0A`` in a path cannot forge a line), each field is cut to a bounded
length (a 1 MiB model name makes no 1 MiB line), and the secrets of the settings (the API key,
a Redis or Ollama password) are replaced by ``***`` wherever they would appear. In the text
format a traceback follows its record on lines that start with ``    | ``, so none of them can
pass for a record of its own.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

import orjson

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

MAX_MESSAGE_CHARS = 2048
MAX_FIELD_CHARS = 256
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """Control characters as ``\\n``, ``\\x1b``, ``\\u2028``: the text stays on one line."""
    return _CONTROL.sub(_escape_char, text)


def cut(text: str, limit: int) -> str:
    """At most ``limit`` characters and a note of how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more chars]"


def clean(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    # Cut before escaping (the cost of a huge field stays bounded), then cut the escaped text
    # again (escaping can make it up to 6x longer).
    return cut(escape(cut(text, limit)), limit * 2)


def _field(value: Any) -> Any:
    """A JSON-safe, bounded version of an ``extra=`` value."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return clean(value)
    if (
        isinstance(value, tuple | list)
        and len(value) <= 16
        and all(item is None or isinstance(item, bool | int | float) for item in value)
    ):
        return list(value)
    return clean(str(value))


class _Scrubber:
    def __init__(self) -> None:
        self.secrets: tuple[str, ...] = ()

    def __call__(self, line: str) -> str:
        for secret in self.secrets:
            if secret in line:
                line = line.replace(secret, "***")
        return line


_scrub = _Scrubber()


def set_secrets(secrets: Iterable[str]) -> None:
    """Strings never to write to the log (longest first, so a part never leaves a rest)."""
    _scrub.secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))


def _message(record: logging.LogRecord) -> str:
    return clean(record.getMessage(), MAX_MESSAGE_CHARS)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _message(record),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                data[clean(key, 64)] = _field(value)
        if record.exc_info:
            data["exception"] = cut(self.formatException(record.exc_info), 16 * 1024)
        return _scrub(orjson.dumps(data, default=str).decode())


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = _message(record)
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        extras = [
            f"{clean(k, 64)}={_text_value(v)}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD
        ]
        if extras:
            line += " " + " ".join(extras)
        if record.exc_info:
            trace = cut(self.formatException(record.exc_info), 16 * 1024)
            line += "".join("\n    | " + escape(part) for part in trace.split("\n"))
        return _scrub(line)


def _text_value(value: Any) -> str:
    field = _field(value)
    return str(tuple(field)) if isinstance(field, list) else str(field)


def configure(log_format: str, level: str, secrets: Iterable[str] = ()) -> None:
    set_secrets(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger("vastllm")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = [handler]
        uvicorn_logger.setLevel(max(logging.getLevelName(level), logging.WARNING))
        uvicorn_logger.propagate = False
