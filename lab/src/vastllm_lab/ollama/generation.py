"""Deterministic "generation" of the lab double (pure functions, no I/O).

The reply is a pure function of (model, messages, tools): the same request always gets the same
text, a different last message gets a different one. Generated tokens are whitespace-separated
words (a leaked tool call: small character chunks); the prompt is counted by ``prompt.py``.
Options only truncate: `num_predict` (tokens, thinking included) and `stop` (strings).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .prompt import Memo, plain_data_key, prompt_tokens, render_xml_call

LEAK_FORMS = ("xml", "xml_wrapped", "json")
_LEAK_CHUNK_SIZES = (1, 4, 2, 7, 3, 5, 2, 9, 1, 6)  # chars per chunk, cycled: cuts markup anywhere

VOCAB = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
    "yankee", "zulu", "code", "test", "build", "deploy", "cache", "model",
    "function", "return", "value", "loop", "branch", "merge", "patch", "commit",
    "server", "client", "stream", "token", "vector", "matrix", "kernel", "thread",
    "module", "import", "export", "class", "method", "object", "string", "number",
    "array", "buffer", "socket", "signal", "packet", "schema", "query", "index",
)  # fmt: skip

_TOKEN_RE = re.compile(r"\s*\S+")
_REMINDER_RE = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)
_ARG_VALUES: dict[str, Any] = {
    "string": "lab",
    "integer": 1,
    "number": 1,
    "boolean": True,
    "array": [],
    "object": {},
    "null": None,
}


class RequestError(ValueError):
    """The request is malformed (HTTP 400); the message says why."""


def split_tokens(text: str) -> list[str]:
    """Split text into word chunks whose concatenation is exactly `text`."""
    tokens = _TOKEN_RE.findall(text)
    consumed = sum(len(t) for t in tokens)
    if consumed < len(text):  # trailing whitespace (or an all-whitespace text)
        if tokens:
            tokens[-1] += text[consumed:]
        else:
            tokens = [text]
    return tokens


def count_tokens(text: str) -> int:
    return len(text.split())


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# marshal bytes of a tools list -> its JSON text (see prompt.plain_data_key)
_TOOLS_JSON: Memo[bytes, str] = Memo(16, 8 << 20)


def _digest(*parts: object, tools: Sequence[Any]) -> bytes:
    """sha256 of the compact, key-sorted JSON of `[*parts, list(tools)]`.

    Hashed piece by piece (a JSON array is its items' JSON joined by commas), the tools' JSON
    memoized: a Claude Code request re-sends ~80 kB of identical tool schemas on every turn.
    """
    digest = hashlib.sha256(b"[")
    for part in parts:
        digest.update(_json(part).encode("utf-8") + b",")
    listed = list(tools)
    key = plain_data_key(listed)
    text = _json(listed) if key is None else _TOOLS_JSON.get(key, lambda: _json(listed))
    digest.update(text.encode("utf-8") + b"]")
    return digest.digest()


def _words(seed: bytes, low: int, spread: int) -> list[str]:
    count = low + seed[0] % spread
    stream = seed
    while len(stream) < count + 1:
        stream += hashlib.sha256(stream).digest()
    return [VOCAB[b % len(VOCAB)] for b in stream[1 : count + 1]]


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""


def prompt_token_count(messages: Sequence[dict[str, Any]], tools: Sequence[Any]) -> int:
    """Whitespace tokens over every message's content (+ thinking) and the tool schemas."""
    total = 0
    for message in messages:
        total += count_tokens(message_text(message))
        thinking = message.get("thinking")
        if isinstance(thinking, str):
            total += count_tokens(thinking)
        if message.get("tool_calls"):
            total += count_tokens(json.dumps(message["tool_calls"], sort_keys=True))
    if tools:
        total += count_tokens(json.dumps(list(tools), sort_keys=True))
    return max(total, 1)


def tool_function(tool: Any) -> dict[str, Any]:
    """The `function` part of a tool (accepts `{"type":"function","function":{...}}` or bare)."""
    if isinstance(tool, dict):
        inner = tool.get("function")
        if isinstance(inner, dict):
            return inner
        return tool
    return {}


def value_for_schema(schema: Any) -> Any:
    """A plain value of the schema's type (first enum value when there is an enum)."""
    if not isinstance(schema, dict):
        return "lab"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return args_for_schema(schema)
    value = _ARG_VALUES.get(kind if isinstance(kind, str) else "string", "lab")
    if isinstance(value, (list, dict)):
        return type(value)()  # a fresh container each time
    return value


def args_for_schema(schema: Any) -> dict[str, Any]:
    """Arguments for each required property of an object schema."""
    if not isinstance(schema, dict):
        return {}
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    if not isinstance(required, list):
        return {}
    return {
        name: value_for_schema(properties.get(name)) for name in required if isinstance(name, str)
    }


def user_words(text: str) -> str:
    """The text without its `<system-reminder>...</system-reminder>` spans (each becomes a
    space): the context a client such as Claude Code adds to a user message, not the user's own
    words."""
    return _REMINDER_RE.sub(" ", text)


_NO_TOOLS = re.compile(r"\b(?:do not|don't|never)\s+(?:use|call)\b", re.IGNORECASE)


def find_tool_call(
    messages: Sequence[dict[str, Any]], tools: Sequence[Any]
) -> dict[str, Any] | None:
    """The tool call the lab double makes: the tool whose name the last user message mentions.

    Only when tools are offered and the last message is from the user; the earliest mention in
    the user's own words wins (ties: the tool listed first). Text inside
    `<system-reminder>...</system-reminder>` does not count: Claude Code puts context there
    (the list of agent types, CLAUDE.md) that names tools. Words that forbid tools ("do not
    use", "don't call", ...) mean no call: Claude Code's compaction request names its tools
    only to forbid them ("Do NOT use Read, Bash, ...") and wants a text summary.
    """
    if not tools or not messages or messages[-1].get("role") != "user":
        return None
    text = user_words(message_text(messages[-1]))
    if _NO_TOOLS.search(text):
        return None
    best: tuple[int, int, dict[str, Any]] | None = None
    for order, tool in enumerate(tools):
        function = tool_function(tool)
        name = function.get("name")
        if not isinstance(name, str) or not name:
            continue
        pattern = r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])"
        match = re.search(pattern, text, re.IGNORECASE)
        if match and (best is None or (match.start(), order) < best[:2]):
            best = (match.start(), order, function)
    if best is None:
        return None
    function = best[2]
    return {
        "function": {
            "name": function["name"],
            "arguments": args_for_schema(function.get("parameters")),
        }
    }


def reply_text(model: str, messages: Sequence[dict[str, Any]], tools: Sequence[Any]) -> str:
    """The deterministic answer text for a conversation."""
    seed = _digest(model, list(messages), tools=tools)
    words = " ".join(_words(seed, 6, 8))
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        name = last.get("tool_name") or last.get("name") or "tool"
        return f"Lab reply from {model}: tool {name} returned {message_text(last)} -- {words}."
    return f"Lab reply from {model}: {words}."


def thinking_text(model: str, messages: Sequence[dict[str, Any]], tools: Sequence[Any]) -> str:
    seed = _digest("thinking", model, list(messages), tools=tools)
    words = " ".join(_words(seed, 4, 6))
    return f"Lab thinking about {len(messages)} message(s): {words}."


def format_text(fmt: Any, text: str) -> str:
    """The content under a `format` request: JSON text, like a model constrained to JSON."""
    if fmt == "json":
        return json.dumps({"reply": text}, separators=(", ", ": "))
    if isinstance(fmt, dict):
        value = value_for_schema(fmt)
        return json.dumps(value, separators=(", ", ": "), sort_keys=True)
    return text


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_options(options: Any) -> tuple[int | None, list[str]]:
    """`num_predict` and `stop` from the request options (other options are accepted as is)."""
    if options is None:
        return None, []
    if not isinstance(options, dict):
        raise RequestError("options must be a JSON object")
    num_predict = options.get("num_predict")
    if num_predict is not None and not _is_number(num_predict):
        raise RequestError('option "num_predict" must be of type integer')
    stop = options.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = [s for s in stop if s]
    else:
        raise RequestError('option "stop" must be of type array of strings')
    for key in ("temperature", "top_p", "top_k", "seed", "num_ctx"):
        value = options.get(key)
        if value is not None and not _is_number(value):
            raise RequestError(f'option "{key}" must be of type number')
    return (int(num_predict) if num_predict is not None else None), stops


def leak_text(call: dict[str, Any], form: str) -> str:
    """A tool call written as text, the ways qwen3-coder leaks it into `content`.

    `xml`: `<function=NAME><parameter=KEY>VALUE</parameter></function>` (qwen3-coder's layout,
    one item per line) without `<tool_call>`; `xml_wrapped`: the same inside
    `<tool_call>...</tool_call>`; `json`: a bare `{"name": ..., "arguments": {...}}` object.
    """
    function = call["function"]
    if form == "json":
        return json.dumps({"name": function["name"], "arguments": function["arguments"]})
    xml = render_xml_call(function["name"], function["arguments"])
    if form == "xml_wrapped":
        return f"<tool_call>\n{xml}\n</tool_call>"
    if form == "xml":
        return xml
    raise ValueError(f"unknown tool-call leak form {form!r}")


def leak_chunks(text: str) -> list[str]:
    """Small stream chunks (1-9 characters, a fixed cycle) that cut tags and JSON anywhere."""
    chunks, position, turn = [], 0, 0
    while position < len(text):
        size = _LEAK_CHUNK_SIZES[turn % len(_LEAK_CHUNK_SIZES)]
        chunks.append(text[position : position + size])
        position += size
        turn += 1
    return chunks


@dataclass
class Reply:
    """A planned answer: chunks to stream (thinking first, then content) and the final stats."""

    thinking: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] | None = None
    done_reason: str = "stop"
    prompt_eval_count: int = 1
    eval_count: int = 0

    @property
    def content_text(self) -> str:
        return "".join(self.content)

    @property
    def thinking_text(self) -> str:
        return "".join(self.thinking)


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut text at the earliest stop string; return (text, cut?)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if cut < 0:
        return text, False
    return text[:cut], True


def plan_reply(
    model: str,
    messages: Sequence[dict[str, Any]],
    tools: Sequence[Any],
    options: Any,
    think: bool,
    fmt: Any = None,
    leak: str | None = None,
    prompt_count: int | None = None,
) -> Reply:
    """Everything the lab double answers for a chat request (pure).

    `leak` (one of LEAK_FORMS) writes a tool call as text in `content` (small chunks)
    instead of `tool_calls`, like qwen3-coder when Ollama's parser misses it. `prompt_count`:
    the prompt's token count when the caller has counted it (the server counts the prompt it
    fits into `num_ctx`); else the whole rendered prompt is counted here.
    """
    num_predict, stops = parse_options(options)
    limit = num_predict if num_predict is not None and num_predict > 0 else None
    if prompt_count is None:
        prompt_count = len(prompt_tokens(messages, tools))
    reply = Reply(prompt_eval_count=max(prompt_count, 1))
    thinking = split_tokens(thinking_text(model, messages, tools)) if think else []
    call = find_tool_call(messages, tools)
    if call is not None and leak:
        tokens = thinking + leak_chunks(leak_text(call, leak))
        if limit is not None and len(tokens) > limit:
            tokens = tokens[:limit]
            reply.done_reason = "length"
        reply.thinking = tokens[: len(thinking)]
        reply.content = tokens[len(thinking) :]
        reply.eval_count = len(tokens)
        return reply
    if call is not None:
        reply.thinking = thinking[:limit] if limit is not None else thinking
        reply.tool_calls = [call]
        reply.eval_count = len(reply.thinking) + count_tokens(json.dumps(call))
        if limit is not None and len(thinking) >= limit:
            reply.tool_calls = None
            reply.done_reason = "length"
        return reply
    text = format_text(fmt, reply_text(model, messages, tools))
    text, _ = cut_at_stop(text, stops)
    tokens = thinking + (split_tokens(text) if text else [])
    done_reason = "stop"
    if limit is not None and len(tokens) > limit:
        tokens = tokens[:limit]
        done_reason = "length"
    reply.thinking = tokens[: len(thinking)]
    reply.content = tokens[len(thinking) :]
    reply.done_reason = done_reason
    reply.eval_count = len(tokens)
    return reply
