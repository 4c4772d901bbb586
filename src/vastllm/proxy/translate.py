"""Pure translation between the Anthropic Messages API and Ollama's ``/api/chat``.

No I/O here: ``parse_request`` validates an Anthropic request body and normalizes it,
``build_chat`` turns it into an Ollama chat body, ``ResponseAssembler`` turns Ollama chunks
(streamed NDJSON lines or one final JSON) into Anthropic stream events and a final message,
and ``replay_events`` turns a stored final message back into a well-formed event stream.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from vastllm.proxy.errors import invalid

JSON = Any
Event = tuple[str, dict[str, Any]]

# "system" in messages: Claude Code 2.1.197 sends mid-conversation system messages there.
_ROLES = ("user", "assistant", "system")
_THINKING_ON = ("enabled", "adaptive")
_BILLING_HEADER = "x-anthropic-billing-header:"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated, normalized Anthropic request: only what shapes the answer."""

    model: str
    stream: bool
    messages: tuple[dict[str, Any], ...]  # Ollama chat messages, system prompt included
    tools: tuple[dict[str, Any], ...]  # Ollama function tools actually offered
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    stop_sequences: tuple[str, ...]
    thinking: bool
    tool_choice: str  # auto | any | tool | none (already applied to tools/messages)

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.max_tokens is not None:
            options["num_predict"] = self.max_tokens
        if self.temperature is not None:
            options["temperature"] = self.temperature
        if self.top_p is not None:
            options["top_p"] = self.top_p
        if self.top_k is not None:
            options["top_k"] = self.top_k
        return options

    def shaping_fields(self, backend_model: str) -> dict[str, Any]:
        """The canonical fields the cache key is computed from (see ``cache.cache_key``)."""
        return {
            "model": backend_model,
            "messages": self.messages,
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "stop_sequences": self.stop_sequences,
            "thinking": self.thinking,
        }


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def new_tool_use_id() -> str:
    return "toolu_" + secrets.token_hex(12)


# --------------------------------------------------------------------------- request side


def _number(body: dict[str, Any], name: str, low: float, high: float | None = None) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"{name}: must be a number")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise invalid(f"{name}: must be {bounds}")
    return float(value)


def _integer(body: dict[str, Any], name: str, low: int, *, required: bool) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise invalid(f"{name}: field required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{name}: must be an integer")
    if value < low:
        raise invalid(f"{name}: must be >= {low}")
    return value


def _system_text(system: Any) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise invalid("system: must be a string or a list of text blocks")
    parts: list[str] = []
    for index, block in enumerate(system):
        where = f"system.{index}"
        if not isinstance(block, dict) or block.get("type") != "text":
            raise invalid(f"{where}: must be a text block")
        text = block.get("text")
        if not isinstance(text, str):
            raise invalid(f"{where}.text: must be a string")
        if text.startswith(_BILLING_HEADER):
            continue  # Claude Code's accounting line, not an instruction for the model
        parts.append(text)
    return "\n\n".join(parts)


def _image_data(block: dict[str, Any], where: str) -> str:
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid(f"{where}.source: must be an object")
    if source.get("type") != "base64":
        raise invalid(f"{where}.source.type: only base64 images are supported")
    data = source.get("data")
    if not isinstance(data, str) or not data:
        raise invalid(f"{where}.source.data: must be a non-empty base64 string")
    return data


def _text_of(block: dict[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise invalid(f"{where}.text: must be a string")
    return text


def _document_text(block: dict[str, Any], where: str) -> str:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text":
        data = source.get("data")
        if isinstance(data, str):
            title = block.get("title")
            return f"{title}\n\n{data}" if isinstance(title, str) and title else data
    raise invalid(f"{where}.source: only plain-text documents are supported")


def _tool_result(block: dict[str, Any], where: str, tool_names: dict[str, str]) -> dict[str, Any]:
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise invalid(f"{where}.tool_use_id: must be a non-empty string")
    content = block.get("content", "")
    texts: list[str] = []
    images: list[str] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for index, part in enumerate(content):
            part_where = f"{where}.content.{index}"
            if not isinstance(part, dict):
                raise invalid(f"{part_where}: must be an object")
            kind = part.get("type")
            if kind == "text":
                texts.append(_text_of(part, part_where))
            elif kind == "image":
                images.append(_image_data(part, part_where))
            elif kind == "document":
                texts.append(_document_text(part, part_where))
            elif not isinstance(kind, str):
                raise invalid(f"{part_where}.type: must be a string")
    else:
        raise invalid(f"{where}.content: must be a string or a list of blocks")
    is_error = block.get("is_error", False)
    if not isinstance(is_error, bool):
        raise invalid(f"{where}.is_error: must be a boolean")
    text = "\n".join(texts)
    if is_error:
        text = "Error: " + text
    message: dict[str, Any] = {"role": "tool", "content": text}
    name = tool_names.get(tool_use_id)
    if name is not None:
        message["tool_name"] = name
    if images:
        message["images"] = images
    return message


def _convert_message(index: int, message: Any, tool_names: dict[str, str]) -> list[dict[str, Any]]:
    where = f"messages.{index}"
    if not isinstance(message, dict):
        raise invalid(f"{where}: must be an object")
    role = message.get("role")
    if role not in _ROLES:
        raise invalid(f"{where}.role: must be 'user', 'assistant' or 'system'")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise invalid(f"{where}.content: must be a string or a list of content blocks")

    out: list[dict[str, Any]] = []  # tool messages precede the user's own text
    texts: list[str] = []
    images: list[str] = []
    thinking: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block_index, block in enumerate(content):
        block_where = f"{where}.content.{block_index}"
        if not isinstance(block, dict):
            raise invalid(f"{block_where}: must be an object")
        kind = block.get("type")
        if not isinstance(kind, str):
            raise invalid(f"{block_where}.type: must be a string")
        if kind == "text":
            texts.append(_text_of(block, block_where))
        elif kind == "image":
            images.append(_image_data(block, block_where))
        elif kind == "document":
            texts.append(_document_text(block, block_where))
        elif kind == "tool_use":
            if role != "assistant":
                raise invalid(f"{block_where}: tool_use blocks belong to assistant messages")
            name = block.get("name")
            if not isinstance(name, str) or not name:
                raise invalid(f"{block_where}.name: must be a non-empty string")
            arguments = block.get("input", {})
            if not isinstance(arguments, dict):
                raise invalid(f"{block_where}.input: must be an object")
            tool_id = block.get("id")
            if isinstance(tool_id, str):
                tool_names[tool_id] = name
            tool_calls.append({"function": {"name": name, "arguments": arguments}})
        elif kind == "tool_result":
            if role != "user":
                raise invalid(f"{block_where}: tool_result blocks belong to user messages")
            out.append(_tool_result(block, block_where, tool_names))
        elif kind == "thinking":
            text = block.get("thinking")
            if not isinstance(text, str):
                raise invalid(f"{block_where}.thinking: must be a string")
            thinking.append(text)
        # redacted_thinking, server tool blocks and future block types carry nothing
        # Ollama can use: tolerated and left out.

    if texts or images or tool_calls or thinking or not out:
        converted: dict[str, Any] = {"role": role, "content": "\n".join(texts)}
        if images:
            converted["images"] = images
        if thinking and role == "assistant":
            converted["thinking"] = "\n".join(thinking)
        if tool_calls:
            converted["tool_calls"] = tool_calls
        out.append(converted)
    return out


def _convert_tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid("tools: must be a list")
    converted: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        where = f"tools.{index}"
        if not isinstance(tool, dict):
            raise invalid(f"{where}: must be an object")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise invalid(f"{where}.name: must be a non-empty string")
        if name in seen:
            raise invalid(f"{where}.name: duplicate tool name {name!r}")
        seen.add(name)
        schema = tool.get("input_schema")
        kind = tool.get("type", "custom")
        if schema is None and kind not in (None, "custom"):
            continue  # an Anthropic server tool (web search, ...): nothing Ollama can run
        if schema is None:
            schema = {}
        if not isinstance(schema, dict):
            raise invalid(f"{where}.input_schema: must be an object")
        if not schema:
            schema = {"type": "object", "properties": {}}
        description = tool.get("description", "")
        if not isinstance(description, str):
            raise invalid(f"{where}.description: must be a string")
        converted.append(
            {
                "type": "function",
                "function": {"name": name, "description": description, "parameters": schema},
            }
        )
    return converted


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]], str]:
    """(mode, tools to offer, instruction to add to the system prompt)."""
    if choice is None:
        return "auto", tools, ""
    if not isinstance(choice, dict):
        raise invalid("tool_choice: must be an object")
    mode = choice.get("type")
    if mode == "auto":
        return "auto", tools, ""
    if mode == "none":
        return "none", [], ""
    if mode == "any":
        if not tools:
            raise invalid("tool_choice: 'any' requires tools")
        return "any", tools, "You must answer by calling one of the provided tools."
    if mode == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise invalid("tool_choice.name: must be a non-empty string")
        chosen = [tool for tool in tools if tool["function"]["name"] == name]
        if not chosen:
            raise invalid(f"tool_choice.name: no tool named {name!r} in tools")
        return "tool", chosen, f"You must answer by calling the tool `{name}`."
    raise invalid("tool_choice.type: must be one of auto, any, tool, none")


def _thinking(value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, dict):
        raise invalid("thinking: must be an object")
    kind = value.get("type")
    if kind in _THINKING_ON:
        return True
    if kind == "disabled":
        return False
    raise invalid("thinking.type: must be enabled or disabled")


def _stop_sequences(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid("stop_sequences: must be a list of strings")
    stops: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise invalid(f"stop_sequences.{index}: must be a non-empty string")
        stops.append(item)
    return tuple(stops)


def parse_request(body: Any, *, count_only: bool = False) -> ChatRequest:
    """Validate an Anthropic Messages (or count_tokens) body; raise 400 naming the field."""
    if not isinstance(body, dict):
        raise invalid("request body: must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid("model: must be a non-empty string")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("stream: must be a boolean")
    max_tokens = _integer(body, "max_tokens", 1, required=not count_only)
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise invalid("messages: must be a non-empty list")

    tools = _convert_tools(body.get("tools"))
    mode, offered, instruction = _tool_choice(body.get("tool_choice"), tools)
    system = _system_text(body.get("system"))
    if instruction:
        system = f"{system}\n\n{instruction}" if system else instruction

    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    tool_names: dict[str, str] = {}
    for index, message in enumerate(raw_messages):
        messages.extend(_convert_message(index, message, tool_names))

    temperature = _number(body, "temperature", 0.0, 1.0)
    top_p = _number(body, "top_p", 0.0, 1.0)
    top_k_value = _integer(body, "top_k", 0, required=False)
    return ChatRequest(
        model=model,
        stream=stream,
        messages=tuple(messages),
        tools=tuple(offered),
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k_value,
        stop_sequences=_stop_sequences(body.get("stop_sequences")),
        thinking=_thinking(body.get("thinking")),
        tool_choice=mode,
    )


def build_chat(
    request: ChatRequest,
    backend_model: str,
    *,
    stream: bool,
    supports_thinking: bool,
    num_predict: int | None = None,
) -> dict[str, Any]:
    """The Ollama ``/api/chat`` body. ``thinking`` is sent only to models that support it."""
    chat: dict[str, Any] = {
        "model": backend_model,
        "messages": request.messages,
        "stream": stream,
    }
    if request.tools:
        chat["tools"] = request.tools
    options = request.options()
    if num_predict is not None:
        options["num_predict"] = num_predict
    if options:
        chat["options"] = options
    if supports_thinking:
        chat["think"] = request.thinking
    return chat


# -------------------------------------------------------------------------- response side


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


def prompt_tokens(reported: int | None, estimate: int) -> int:
    """The prompt tokens to report. Ollama counts only the prompt tokens it evaluated: when it
    reuses its cache for the start of a conversation (every later turn of Claude Code), the count
    covers just the new part. A client that sizes its context from `usage.input_tokens` must not
    see that, so a count far below the estimate is replaced by the estimate."""
    if reported is None or reported * 2 < estimate:
        return estimate
    return reported


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

    content: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    stop_reason: str | None = None
    stop_sequence: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    _open: str | None = None  # kind of the open content block: "text" | "thinking"
    _pending: str = ""  # text held back while it may begin a stop sequence
    _chunks: int = 0

    def start_events(self) -> list[Event]:
        return [
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": self.message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": self.model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": 0, "output_tokens": 0},
                    },
                },
            ),
            ("ping", {"type": "ping"}),
        ]

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
        self._open_block("text", events)
        self.content[-1]["text"] += text
        if self.emit:
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
        if self.emit:
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
    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        """One Ollama chunk in, the Anthropic events it produces out (already final if done)."""
        events: list[Event] = []
        if self.finished:
            return events
        message = chunk.get("message")
        if isinstance(message, dict):
            thought = message.get("thinking")
            if self.thinking and isinstance(thought, str) and thought:
                self._chunks += 1
                self._emit_thinking(thought, events)
            text = message.get("content")
            if isinstance(text, str) and text:
                self._chunks += 1
                self._feed_text(text, events)
            if not self.finished:
                calls = message.get("tool_calls")
                if isinstance(calls, list):
                    for call in calls:
                        self._emit_tool_call(call, events)
        if self.finished:  # a stop sequence matched: the answer ends here, before Ollama's counts
            self.input_tokens = self.input_tokens or self.input_estimate
            events.extend(self._finish(None))
        elif chunk.get("done"):
            prompt = chunk.get("prompt_eval_count")
            generated = chunk.get("eval_count")
            self.input_tokens = prompt_tokens(
                prompt if isinstance(prompt, int) else None, self.input_estimate
            )
            self.output_tokens = generated if isinstance(generated, int) else self._chunks
            self._flush_pending(events)
            reason = chunk.get("done_reason")
            if reason == "length":  # cut off, even in the middle of a tool call
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
