"""Ollama ``/api/chat`` answer → Anthropic Messages answer. Pure: no I/O.

``ResponseAssembler`` turns Ollama chunks (streamed NDJSON lines or one final JSON, already
decoded) into Anthropic stream events and a final message, matching stop sequences itself;
``replay_events`` turns a stored final message back into a well-formed event stream (a cache hit);
``prompt_tokens`` and ``estimate_prompt_tokens`` decide the ``usage.input_tokens`` reported;
``anthropic_error`` and ``mid_answer_error`` turn a backend failure into the error the client sees.
The other direction is ``translate_request``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from vastllm.proxy.errors import (
    BackendBadReply,
    BackendError,
    BackendStatus,
    BackendTimeout,
    BackendUnreachable,
    ProxyError,
    invalid,
)
from vastllm.proxy.toolcalls import Call, ToolCallRescuer

Event = tuple[str, dict[str, Any]]


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def new_tool_use_id() -> str:
    return "toolu_" + secrets.token_hex(12)


def start_events(message_id: str, model: str) -> list[Event]:
    """``message_start`` and the first ``ping`` of a live stream (the usage follows in
    ``message_delta``): the leader of a generation and a follower whose pings start its stream
    send the same."""
    return [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            },
        ),
        ("ping", {"type": "ping"}),
    ]


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could still begin a stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            parsed = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            return {"_raw": raw}
        return parsed if isinstance(parsed, dict) else {"_value": parsed}
    return {}


def estimate_prompt_tokens(chat: Mapping[str, Any]) -> int:
    """A rough prompt size (about 4 characters a token) from the text Ollama will see."""
    chars = 0
    for message in chat.get("messages") or ():
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
    tools = chat.get("tools")
    if tools:
        chars += len(orjson.dumps(tools))
    return chars // 4


# Largest token count believed from the backend: beyond any context window. A count that is not
# an integer in [0, MAX_TOKEN_COUNT] (negative, a bool, a float, absurd) is not reported.
MAX_TOKEN_COUNT = 10_000_000


def sane_count(value: Any, limit: int = MAX_TOKEN_COUNT) -> int | None:
    """A backend's token count if it is believable (an int in [0, limit]), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit:
        return value
    return None


def output_tokens(reported: Any, counted: int, max_tokens: int | None) -> int:
    """The output tokens to report: the backend's ``eval_count`` if believable, else the chunks
    counted; never above ``max_tokens`` (the most the proxy lets through)."""
    count = sane_count(reported)
    if not count:
        count = counted
    if max_tokens is not None and count > max_tokens:
        count = max_tokens
    return count


def prompt_tokens(reported: Any, estimate: int) -> int:
    """The prompt tokens to report. Ollama counts only the prompt tokens it evaluated: when it
    reuses its cache for the start of a conversation (every later turn of Claude Code), the count
    covers just the new part. A client that sizes its context from `usage.input_tokens` must not
    see that, so a count far below the estimate is replaced by the estimate."""
    count = sane_count(reported)
    if count is None or count * 2 < estimate:
        return estimate
    return count


_TEXT_FIELD = {"text_delta": "text", "thinking_delta": "thinking"}


def _extend_delta(events: list[Event], index: int, kind: str, text: str) -> bool:
    """Add ``text`` to the last event when it is a ``kind`` delta of block ``index`` (not yet
    sent: the caller encodes ``events`` afterwards); whether it did."""
    if not events:
        return False
    name, data = events[-1]
    if name != "content_block_delta" or data["index"] != index:
        return False
    delta = data["delta"]
    if delta["type"] != kind:
        return False
    field = _TEXT_FIELD[kind]
    delta[field] += text
    return True


@dataclass(slots=True)
class ResponseAssembler:
    """Feed Ollama chunks; get Anthropic stream events and, at the end, the final message.

    Stop sequences are matched here (not by Ollama, which cannot say which one matched): text
    that may be the start of a stop sequence is held back until it is known not to be.
    """

    message_id: str
    model: str
    stop_sequences: tuple[str, ...] = ()
    thinking: bool = False
    emit: bool = True
    new_tool_id: Callable[[], str] = new_tool_use_id
    input_estimate: int = 0  # estimate_prompt_tokens() of the request, see prompt_tokens()
    max_tokens: int | None = None  # the answer ends (stop_reason max_tokens) after this many
    # The tools the request offered (Ollama function tools): a call the model wrote as text
    # is turned into a tool_use block (``toolcalls``); ``rescued`` lists the form of each.
    tools: Sequence[dict[str, Any]] = ()

    content: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    cut_short: bool = False  # ended by the proxy (stop sequence, max_tokens), not by the backend
    stop_reason: str | None = None
    stop_sequence: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    _open: str | None = None  # kind of the open content block: "text" | "thinking"
    _pending: str = ""  # text held back while it may begin a stop sequence
    _chunks: int = 0
    rescued: list[str] = field(default_factory=list)
    _rescuer: ToolCallRescuer | None = None
    _blank_after_tool: str = ""  # whitespace after a tool_use: text only if more text follows

    def __post_init__(self) -> None:
        if self.tools:
            self._rescuer = ToolCallRescuer(self.tools)

    def start_events(self) -> list[Event]:
        return start_events(self.message_id, self.model)

    # -- block helpers
    def _close(self, events: list[Event]) -> None:
        if self._open is not None:
            if self.emit:
                index = len(self.content) - 1
                events.append(
                    ("content_block_stop", {"type": "content_block_stop", "index": index})
                )
            self._open = None

    def _open_block(self, kind: str, events: list[Event]) -> None:
        if self._open == kind:
            return
        self._close(events)
        block: dict[str, Any] = (
            {"type": "text", "text": ""}
            if kind == "text"
            else {"type": "thinking", "thinking": "", "signature": ""}
        )
        self.content.append(block)
        self._open = kind
        if self.emit:
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": len(self.content) - 1,
                        "content_block": dict(block),
                    },
                )
            )

    def _emit_text(self, text: str, events: list[Event]) -> None:
        if not text:
            return
        if self._open != "text" and self.content and self.content[-1]["type"] == "tool_use":
            # Text after a tool call opens a new block: whitespace alone never does (it waits
            # for more text, and is dropped at the end).
            text = self._blank_after_tool + text
            if not text.strip():
                self._blank_after_tool = text
                return
            self._blank_after_tool = ""
        self._open_block("text", events)
        self.content[-1]["text"] += text
        if self.emit and not _extend_delta(events, len(self.content) - 1, "text_delta", text):
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": len(self.content) - 1,
                        "delta": {"type": "text_delta", "text": text},
                    },
                )
            )

    def _emit_thinking(self, text: str, events: list[Event]) -> None:
        self._open_block("thinking", events)
        self.content[-1]["thinking"] += text
        if self.emit and not _extend_delta(events, len(self.content) - 1, "thinking_delta", text):
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": len(self.content) - 1,
                        "delta": {"type": "thinking_delta", "thinking": text},
                    },
                )
            )

    def _emit_tool_call(self, call: Any, events: list[Event]) -> None:
        if not isinstance(call, dict):
            return
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return
        self._flush_pending(events)
        self._close(events)
        arguments = _arguments(function.get("arguments"))
        block = {
            "type": "tool_use",
            "id": self.new_tool_id(),
            "name": function["name"],
            "input": arguments,
        }
        self.content.append(block)
        if self.emit:
            index = len(self.content) - 1
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {**block, "input": {}},
                    },
                )
            )
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {
                            "type": "input_json_delta",
                            "partial_json": orjson.dumps(arguments).decode(),
                        },
                    },
                )
            )
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))

    def _model_text(self, text: str, events: list[Event], *, final: bool = False) -> None:
        """Answer text from the model: through the tool-call rescue when tools were offered."""
        rescuer = self._rescuer
        if rescuer is None:
            self._feed_text(text, events)
            return
        pieces = rescuer.feed(text) if text else []
        if final:
            pieces += rescuer.finish()
        for piece in pieces:
            if self.finished:
                return
            if isinstance(piece, Call):
                self.rescued.append(piece.form)
                self._emit_tool_call(
                    {"function": {"name": piece.name, "arguments": piece.input}}, events
                )
            else:
                self._feed_text(piece.text, events)

    def _release_held(self, events: list[Event]) -> None:
        """Ollama sent structured tool calls: the text the rescue still holds (whitespace, the
        start of what might have been a call written as text) goes out as text first, in its
        place before the calls. Whitespace alone opens no block."""
        if self._rescuer is None:
            return
        for piece in self._rescuer.release_held():
            if isinstance(piece, Call):  # release_held gives text only
                continue
            if piece.text.strip() or self._open == "text" or self._pending:
                self._feed_text(piece.text, events)

    def _flush_pending(self, events: list[Event]) -> None:
        pending, self._pending = self._pending, ""
        self._emit_text(pending, events)

    def _feed_text(self, text: str, events: list[Event]) -> None:
        if not self.stop_sequences:
            self._emit_text(text, events)
            return
        pending = self._pending + text
        first: tuple[int, str] | None = None
        for stop in self.stop_sequences:
            at = pending.find(stop)
            if at >= 0 and (first is None or at < first[0]):
                first = (at, stop)
        if first is not None:
            self._pending = ""
            self._emit_text(pending[: first[0]], events)
            self.stop_reason = "stop_sequence"
            self.stop_sequence = first[1]
            self.finished = True
            return
        keep = _held_back(pending, self.stop_sequences)
        self._pending = pending[len(pending) - keep :] if keep else ""
        self._emit_text(pending[: len(pending) - keep], events)

    # -- public API
    def feed(self, chunk: dict[str, Any], events: list[Event] | None = None) -> list[Event]:
        """One Ollama chunk in, the Anthropic events it produces out (already final if done).

        ``events``: a list to add them to (returned), e.g. the events of earlier chunks that
        came in the same network read; a text or thinking delta that continues the last one
        in it is merged into it (one SSE event for the read, not one per chunk)."""
        if events is None:
            events = []
        if self.finished:
            return events
        message = chunk.get("message")
        if (
            self.max_tokens is not None
            and self._chunks >= self.max_tokens
            and not chunk.get("done")
            and isinstance(message, dict)
            and (message.get("content") or message.get("thinking") or message.get("tool_calls"))
        ):
            # max_tokens tokens relayed and the backend goes on (it ignored num_predict): the
            # answer ends here, without this chunk; the caller drops the connection.
            self._model_text("", events, final=True)
            self._flush_pending(events)
            self.stop_reason = "max_tokens"
            self.finished = True
            message = None
        if isinstance(message, dict):
            thought = message.get("thinking")
            if self.thinking and isinstance(thought, str) and thought:
                self._chunks += 1
                self._emit_thinking(thought, events)
            text = message.get("content")
            if isinstance(text, str) and text:
                self._chunks += 1
                self._model_text(text, events)
            if not self.finished:
                calls = message.get("tool_calls")
                if isinstance(calls, list) and calls:
                    self._release_held(events)
                    for call in calls:
                        if self.finished:  # a stop sequence in the released text
                            break
                        self._emit_tool_call(call, events)
        if self.finished:  # a stop sequence or max_tokens: the answer ends before Ollama's counts
            self.cut_short = True
            self.input_tokens = self.input_tokens or self.input_estimate
            self.output_tokens = output_tokens(None, self._chunks, self.max_tokens)
            events.extend(self._finish(None))
        elif chunk.get("done"):
            self.input_tokens = prompt_tokens(chunk.get("prompt_eval_count"), self.input_estimate)
            self.output_tokens = output_tokens(
                chunk.get("eval_count"), self._chunks, self.max_tokens
            )
            self._model_text("", events, final=True)
            self._flush_pending(events)
            reason = chunk.get("done_reason")
            if self.stop_sequence is not None:  # matched in text the rescue held to the end
                pass
            elif reason == "length":  # cut off, even in the middle of a tool call
                self.stop_reason = "max_tokens"
            elif any(block["type"] == "tool_use" for block in self.content):
                self.stop_reason = "tool_use"
            else:
                self.stop_reason = "end_turn"
            events.extend(self._finish(reason))
        return events

    def _finish(self, _reason: str | None) -> list[Event]:
        events: list[Event] = []
        self._close(events)
        self.finished = True
        if not self.output_tokens:
            self.output_tokens = self._chunks
        if self.emit:
            events.append(
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {
                            "stop_reason": self.stop_reason,
                            "stop_sequence": self.stop_sequence,
                        },
                        "usage": self.usage(),
                    },
                )
            )
            events.append(("message_stop", {"type": "message_stop"}))
        return events

    def usage(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}

    def message(self) -> dict[str, Any]:
        """The final Anthropic message (call once ``finished``)."""
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.content,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": self.usage(),
        }


def replay_events(message: dict[str, Any]) -> list[Event]:
    """A complete, well-formed event stream for a stored final message (a cache hit)."""
    usage = message.get("usage") or {}
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": usage.get("input_tokens", 0), "output_tokens": 0},
    }
    events: list[Event] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(message.get("content") or []):
        kind = block.get("type")
        if kind == "text":
            empty: dict[str, Any] = {"type": "text", "text": ""}
            delta: dict[str, Any] = {"type": "text_delta", "text": block.get("text", "")}
        elif kind == "thinking":
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            delta = {"type": "thinking_delta", "thinking": block.get("thinking", "")}
        elif kind == "tool_use":
            empty = {**block, "input": {}}
            delta = {
                "type": "input_json_delta",
                "partial_json": orjson.dumps(block.get("input", {})).decode(),
            }
        else:
            continue
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": empty},
            )
        )
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": message.get("stop_reason"),
                    "stop_sequence": message.get("stop_sequence"),
                },
                "usage": usage,
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


# --------------------------------------------------------------------------------- errors


def map_status(status: int, detail: str, model: str) -> ProxyError:
    """An Ollama HTTP error → the Anthropic error the client sees."""
    if status == 404:
        return ProxyError("not_found_error", f"model {model!r} is not available on the backend")
    if status in (429, 503):
        return ProxyError("overloaded_error", f"backend is overloaded: {detail}")
    if 400 <= status < 500:
        return invalid(f"backend rejected the request: {detail}")
    return ProxyError("api_error", f"backend error (HTTP {status}): {detail}")


def _bad_reply(exc: BackendBadReply) -> ProxyError:
    if exc.kind == "bad_chunk":
        return ProxyError("api_error", "backend sent malformed data")
    kind = "overloaded_error" if "overload" in exc.detail.lower() else "api_error"
    return ProxyError(kind, f"backend error: {exc.detail}")


def anthropic_error(exc: BackendError, model: str) -> ProxyError:
    """A backend failure before the answer started → the Anthropic error the client sees."""
    if isinstance(exc, BackendStatus):
        return map_status(exc.status, exc.detail, model)
    if isinstance(exc, BackendBadReply):
        return _bad_reply(exc)
    if isinstance(exc, BackendUnreachable):
        return ProxyError("overloaded_error", "backend unreachable: cannot connect to Ollama")
    if isinstance(exc, BackendTimeout):
        return ProxyError("overloaded_error", "backend timed out")
    return ProxyError("overloaded_error", "backend connection failed")


def mid_answer_error(exc: BackendError) -> ProxyError:
    """A backend failure while the answer was arriving → the Anthropic error (an SSE ``error``
    event when the client streams)."""
    if isinstance(exc, BackendBadReply):
        return _bad_reply(exc)
    if isinstance(exc, BackendTimeout):
        return ProxyError("overloaded_error", "backend timed out mid-answer")
    return ProxyError("api_error", "backend connection lost mid-answer")
