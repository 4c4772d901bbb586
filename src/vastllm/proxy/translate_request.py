"""Anthropic Messages request → Ollama ``/api/chat`` body. Pure: no I/O.

``parse_request`` validates an Anthropic Messages (or count_tokens) body, naming the field at
fault, and normalizes it into a ``ChatRequest`` (only what shapes the answer, which is also what
the cache key is computed from); ``build_chat`` turns that into the Ollama chat body.
The other direction is ``translate_response``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vastllm.proxy.errors import invalid

# "system" in messages: Claude Code 2.1.197 sends mid-conversation system messages there. Ollama's
# qwen3-coder renderer keeps only the first system message (the system prompt) and drops the
# others, so each one after it is folded into a user turn, in place (``_fold_system``).
_ROLES = ("user", "assistant", "system")
_REMINDER = "<system-reminder>\n{}\n</system-reminder>"
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


# Deepest nesting accepted in the free-form JSON of a request (``tools[].input_schema``,
# ``tool_use.input``). orjson parses 1,024 levels but serializes only ~254, and the proxy
# serializes these values again (the cache key, the Ollama request) a few levels deeper:
# a limit well below keeps every accepted request answerable (docs/proxy.md).
MAX_JSON_DEPTH = 64


def check_depth(value: Any, where: str, limit: int = MAX_JSON_DEPTH) -> None:
    """400 ``invalid_request_error`` naming the limit when ``value`` nests deeper than ``limit``
    objects/arrays (``value`` itself is level 1). Iterative, a level at a time: no recursion
    limit of its own (and Claude Code's ~80 kB of tool schemas are walked in ~0.1 ms)."""
    containers = (dict, list)
    level = [value] if isinstance(value, containers) else []
    depth = 1
    while level:
        if depth > limit:
            raise invalid(f"{where}: JSON nested deeper than {limit} levels (the limit is {limit})")
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            below += [child for child in children if isinstance(child, containers)]
        level = below
        depth += 1


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
            check_depth(arguments, f"{block_where}.input")
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


def _fold_system(messages: list[dict[str, Any]], systems: list[dict[str, Any]]) -> None:
    """Fold system messages that are not the system prompt into a user turn, in place.

    Ollama's qwen3-coder renderer keeps only the first system message and drops every other, so
    a mid-conversation one (Claude Code's list of agent types) would never reach the model. Each
    of ``systems`` (consecutive system messages, in their order) becomes ``<system-reminder>``
    text, the form Claude Code itself uses in user messages: put before the text of the message
    just before them when that is the user's own text (not a tool result; reminders come first
    there, as Claude Code places its own), else a user message of their own. Only that preceding
    message changes, and it is never the last message of an earlier request (the model's answer
    came after that), so a later turn still only appends: the prompt prefix Ollama caches stays
    byte-identical. Before the user's words, the list Claude Code sends after every session's
    first prompt (the agent types, ~6 kB) stays in the prefix that sessions share: a fresh
    session evaluates its own prompt only.
    """
    reminders = [_REMINDER.format(m["content"]) for m in systems if m.get("content")]
    images = [image for m in systems for image in m.get("images", [])]
    if not reminders and not images:
        return  # nothing for the model (Ollama ignores an empty system message too)
    last = messages[-1]
    if last["role"] == "user":
        joined = "\n\n".join([*reminders, last["content"]] if last["content"] else reminders)
        folded = {**last, "content": joined}
        if images:
            folded["images"] = [*images, *last.get("images", [])]
        messages[-1] = folded
        return
    user: dict[str, Any] = {"role": "user", "content": "\n\n".join(reminders)}
    if images:
        user["images"] = images
    messages.append(user)


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
        check_depth(schema, f"{where}.input_schema")
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
    # Without a top-level `system`, a system message that is the very first message is the
    # system prompt (any later one is folded into a user turn, ``_fold_system``).
    tool_names: dict[str, str] = {}
    leading: dict[str, Any] | None = None
    first: list[dict[str, Any]] | None = None
    if not system:
        first = _convert_message(0, raw_messages[0], tool_names)
        if first[0]["role"] == "system":
            leading = first[0]
            system = leading.get("content", "")
    if instruction:
        system = f"{system}\n\n{instruction}" if system else instruction

    messages: list[dict[str, Any]] = []
    if system or leading is not None:
        prompt: dict[str, Any] = {"role": "system", "content": system}
        if leading is not None and leading.get("images"):
            prompt["images"] = leading["images"]
        messages.append(prompt)
    pending: list[dict[str, Any]] = []  # system messages to fold, in their order
    for index, message in enumerate(raw_messages):
        if index == 0 and leading is not None:
            continue  # the system prompt, above
        if index == 0 and first is not None:
            converted = first
        else:
            converted = _convert_message(index, message, tool_names)
        if converted[0]["role"] == "system":
            pending.append(converted[0])
            continue
        if pending:
            _fold_system(messages, pending)
            pending = []
        messages.extend(converted)
    if pending:
        _fold_system(messages, pending)

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
    num_ctx: int | None = None,
) -> dict[str, Any]:
    """The Ollama ``/api/chat`` body. ``thinking`` is sent only to models that support it.
    ``num_ctx`` (the context window, ``window.py``) goes with ``truncate: false`` and
    ``shift: false``: a prompt that does not fit is refused, never cut."""
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
    if num_ctx is not None:
        options["num_ctx"] = num_ctx
        chat["truncate"] = False
        chat["shift"] = False
    if options:
        chat["options"] = options
    if supports_thinking:
        chat["think"] = request.thinking
    return chat
