"""The prompt the lab double "evaluates": chat template, tokenizer, `num_ctx` fitting. Pure.

The chat template is qwen3-coder-like (ChatML): the system prompt first, then the tool schemas,
then the messages, then the generation prompt. Like real Ollama's qwen3-coder renderer
(`model/renderers/qwen3coder.go`), only the first (non-empty) `system` message is the system
prompt, wherever it stands; every other `system` message is dropped from the prompt. It is
byte-stable: the same messages and tools give the same bytes whatever the key order of the
request's JSON (the tools are re-serialized with sorted keys, as real Ollama's Go structs and
sorted maps re-serialize them); tool order, message order and contents matter.

Tokens are a deterministic estimate: a special marker (`<|im_start|>`), or a run of
non-whitespace, each with the whitespace after it (text before a `<` is cut there).

The prompt is rendered as segments, one per turn, each but the last ending in `<|im_end|>\n`
and each beginning with `<|im_start|>`: no token spans two segments, so the tokens of the whole
are the tokens of each segment in turn. The double memoizes them per segment (and the tool
schemas' text per tools list), so a follow-up turn tokenizes only what it adds: the ~115 kB of
a Claude Code prompt cost ~0.5 ms instead of 3-5 ms of pure Python (twice per request before).
The results are those of rendering and tokenizing from scratch; only the double's CPU time
changes.
"""

from __future__ import annotations

import json
import marshal
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

_TOKEN_RE = re.compile(r"<\|[a-z_]+\|>\s*|[^\s<]+\s*|<\s*|\s+")
NUM_KEEP = 5  # Ollama's default num_keep (4) + the BOS token: kept at the front by a shift

SHIFT_OFF_ERROR = (
    "the prompt is longer than the context length currently available to the model; "
    "shorten the prompt, adjust the context length in settings, or use a model with a "
    "longer context length"
)


def tokenize(text: str) -> list[str]:
    """Split text into tokens whose concatenation is exactly `text`."""
    return _TOKEN_RE.findall(text)


_K = TypeVar("_K", str, bytes)
_V = TypeVar("_V")


class Memo(Generic[_K, _V]):
    """A thread-safe LRU memo of a pure function's results, by key; bounded by entries and by
    the keys' total length."""

    def __init__(self, entries: int, length: int) -> None:
        self._entries = entries
        self._budget = length
        self._length = 0
        self._items: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _K, make: Callable[[], _V]) -> _V:
        """The value for `key`, made by `make()` the first time."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        if len(key) > self._budget:
            return value
        with self._lock:
            if key not in self._items:
                self._items[key] = value
                self._length += len(key)
                while len(self._items) > self._entries or self._length > self._budget:
                    old, _ = self._items.popitem(last=False)
                    self._length -= len(old)
        return value


# Prompt segment -> its tokens. A Claude Code session re-sends the same ~115 kB of segments on
# every turn; at most 4,096 segments and 8 M characters are kept (about 80 MB).
_SEGMENT_TOKENS: Memo[str, tuple[str, ...]] = Memo(4096, 8 << 20)
# marshal.dumps of a tools list -> the tools' JSON lines. marshal is type-exact (1, 1.0 and
# True differ, unlike ==), so equal bytes mean equal JSON text.
_TOOLS_LINES: Memo[bytes, str] = Memo(16, 8 << 20)


def _segment_tokens(segment: str) -> tuple[str, ...]:
    return _SEGMENT_TOKENS.get(segment, lambda: tuple(_TOKEN_RE.findall(segment)))


def plain_data_key(value: Any) -> bytes | None:
    """A type-exact key of a JSON-like value (its marshal bytes), None if it is not plain data.

    Equal keys mean equal values of equal types (so equal JSON text); unequal keys may still be
    equal values (key order, shared objects): a memo using it may miss, never give a wrong hit.
    """
    try:
        return marshal.dumps(value)
    except ValueError:
        return None


def tools_text(tools: Sequence[Any]) -> str:
    """One JSON line per tool (sorted keys, as the template shows them); memoized."""

    def make() -> str:
        return "\n".join(
            json.dumps(t, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))
            for t in tools
        )

    key = plain_data_key(list(tools))
    return make() if key is None else _TOOLS_LINES.get(key, make)


def _arg_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render_xml_call(name: str, arguments: Any) -> str:
    """qwen3-coder's own tool-call text: `<function=NAME>` with one `<parameter=KEY>` each."""
    parts = [f"<function={name}>\n"]
    if isinstance(arguments, dict):
        for key, value in arguments.items():
            parts.append(f"<parameter={key}>\n{_arg_text(value)}\n</parameter>\n")
    parts.append("</function>")
    return "".join(parts)


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""


def _tool_calls_text(message: dict[str, Any]) -> str:
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return ""
    text = ""
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        name = function.get("name")
        call_text = render_xml_call(
            name if isinstance(name, str) else "", function.get("arguments")
        )
        text += f"\n<tool_call>\n{call_text}\n</tool_call>"
    return text


def system_prompt(messages: Sequence[dict[str, Any]]) -> str:
    """The system prompt: the first non-empty `system` message (Ollama's qwen3-coder renderer
    lets the first one win and drops the others)."""
    for message in messages:
        if message.get("role") == "system":
            content = _content(message)
            if content:
                return content
    return ""


def render_segments(messages: Sequence[dict[str, Any]], tools: Sequence[Any]) -> list[str]:
    """The prompt as segments: the system head, one per message, the generation prompt."""
    system = system_prompt(messages)
    out = []
    if system or tools:
        head = system
        if tools:
            head += (
                ("\n\n" if head else "")
                + "# Tools\n\nYou have access to the following functions:\n\n<tools>\n"
                + tools_text(tools)
                + "\n</tools>"
            )
        out.append(f"<|im_start|>system\n{head}<|im_end|>\n")
    for message in messages:
        role = message.get("role")
        if role == "system":
            continue
        if role == "tool":
            out.append(
                f"<|im_start|>user\n<tool_response>\n{_content(message)}\n</tool_response>"
                "<|im_end|>\n"
            )
        elif role == "assistant":
            body = _content(message) + _tool_calls_text(message)
            out.append(f"<|im_start|>assistant\n{body}<|im_end|>\n")
        else:
            out.append(f"<|im_start|>{role}\n{_content(message)}<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    return out


def render_prompt(messages: Sequence[dict[str, Any]], tools: Sequence[Any]) -> str:
    """The prompt text the template makes of a chat request (system, tools, messages)."""
    return "".join(render_segments(messages, tools))


def prompt_tokens(messages: Sequence[dict[str, Any]], tools: Sequence[Any]) -> list[str]:
    """`tokenize(render_prompt(messages, tools))`, segment by segment (memoized)."""
    tokens: list[str] = []
    for segment in render_segments(messages, tools):
        tokens.extend(_segment_tokens(segment))
    return tokens


def exceeds_error(count: int, num_ctx: int) -> str:
    """Ollama's answer (HTTP 400 `error`) to an over-long prompt with `truncate: false`.

    The runner's (llama-server's) own JSON error, passed through as a string.
    """
    inner = {
        "error": {
            "code": 400,
            "message": (
                f"request ({count} tokens) exceeds the available context size "
                f"({num_ctx} tokens), try increasing it"
            ),
            "type": "exceed_context_size_error",
            "n_prompt_tokens": count,
            "n_ctx": num_ctx,
        }
    }
    return json.dumps(inner, separators=(",", ":"))


@dataclass
class Fit:
    """What `num_ctx` does to a prompt: the tokens kept, or the error (HTTP 400)."""

    tokens: list[str]
    full_count: int
    error: str | None = None
    dropped_messages: int = 0
    shifted: bool = False


def fit_context(
    messages: Sequence[dict[str, Any]],
    tools: Sequence[Any],
    num_ctx: int,
    truncate: bool = True,
    shift: bool = True,
) -> Fit:
    """Fit the rendered prompt into `num_ctx` tokens the way Ollama does.

    - it fits: kept as is;
    - `truncate: false`: the runner's `exceed_context_size_error` (HTTP 400);
    - otherwise the oldest non-system messages are dropped (the last message always stays)
      until the prompt fits; if even that does not fit: with `shift: false` the error
      "the prompt is longer than the context length ...", else a context shift keeps the first
      NUM_KEEP tokens and the tail, `num_ctx - (num_ctx - NUM_KEEP) // 2` tokens in all.
    """
    full = prompt_tokens(messages, tools)
    if len(full) <= num_ctx:
        return Fit(full, len(full))
    if not truncate:
        return Fit([], len(full), error=exceeds_error(len(full), num_ctx))
    # system messages always stay (the template renders the first non-empty one), as in Ollama
    system = [m for m in messages if m.get("role") == "system"]
    rest = [m for m in messages if m.get("role") != "system"]
    tokens = full
    dropped = 0
    for start in range(1, len(rest)):
        tokens = prompt_tokens(system + rest[start:], tools)
        dropped = start
        if len(tokens) <= num_ctx:
            return Fit(tokens, len(full), dropped_messages=dropped)
    if not shift:
        return Fit([], len(full), error=SHIFT_OFF_ERROR, dropped_messages=dropped)
    keep = min(NUM_KEEP, num_ctx)
    limit = max(num_ctx - (num_ctx - keep) // 2, keep)
    kept = tokens[:keep] + (tokens[len(tokens) - (limit - keep) :] if limit > keep else [])
    return Fit(kept, len(full), dropped_messages=dropped, shifted=True)


_BLOCK = 512


def common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common prefix of two token sequences.

    Compared a block at a time (list equality is C code, and memoized tokens are shared
    objects), then token by token inside the first block that differs.
    """
    n = min(len(a), len(b))
    i = 0
    while i + _BLOCK <= n and a[i : i + _BLOCK] == b[i : i + _BLOCK]:
        i += _BLOCK
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class Slot:
    """One parallel slot of a loaded model: its cached tokens and counters."""

    tokens: list[str]
    last_used: int = 0
    busy: bool = False
    requests: int = 0
    hits: int = 0  # requests that reused a cached prefix
    reused_tokens: int = 0
    evaluated_tokens: int = 0
    # the double's own time on its requests before evaluation (JSON, prompt rendering and
    # tokenizing, slot choice): Python work real Ollama does in Go, not the emulated evaluation
    work_ns: int = 0


def choose_slot(slots: Sequence[Slot], prompt: Sequence[str]) -> tuple[int, int]:
    """(slot index, reusable prefix length), the way Ollama's runner picks a cache slot.

    The slot whose whole cache begins the prompt (the longest such prefix) is continued in
    place. Otherwise the least recently used free slot is taken and the longest common prefix
    found in any slot is copied into it (Ollama copies that part of the KV cache), so a prompt
    that diverges from a slot never destroys that slot's cache while another slot is free.
    With no free slot every slot is a candidate (Ollama would answer "no available cache
    slots"; the double serves every request). The prefix stops one token short of the whole
    prompt: the last token is always evaluated (the model needs its logits), as in Ollama.
    """
    free = [i for i, s in enumerate(slots) if not s.busy] or list(range(len(slots)))
    counts = [common_prefix(slot.tokens, prompt) for slot in slots]
    longest = max(range(len(slots)), key=lambda i: (counts[i], -slots[i].last_used))
    cap = max(len(prompt) - 1, 0)
    if longest in free and counts[longest] == len(slots[longest].tokens) and counts[longest]:
        return longest, min(counts[longest], cap)
    oldest = min(free, key=lambda i: slots[i].last_used)
    return oldest, min(counts[longest], cap)
