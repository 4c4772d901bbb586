"""Tool calls the model wrote as text → ``tool_use``. Pure: no I/O.

qwen3-coder sometimes writes its tool call into the answer text instead of the structured
``tool_calls`` field, and Ollama passes it through as ``content``. When the request offered
tools, ``ToolCallRescuer`` recognizes such a call and hands it back as a call, streaming
included. Forms (``form`` is the label of ``vastllm_tool_calls_rescued_total``):

- ``xml``: ``<function=NAME><parameter=KEY>VALUE</parameter>...</function>`` (one line, or one
  item a line, values possibly on several lines);
- ``xml_wrapped``: the same inside ``<tool_call>...</tool_call>`` (the closing tag may be
  missing at the very end of the answer);
- ``json``: ``{"name": NAME, "arguments": {...}}`` (or ``"parameters"``), bare or inside
  ``<tool_call>...</tool_call>``; ``name`` is the object's first key.

The rule (docs/proxy.md "Tool-call rescue"): only a *trailing run* of calls is converted, that is,
the answer ends with one or more calls separated by whitespace only, and the first of them
starts the answer or a line (after spaces or tabs only), outside a ````` fenced block. Every call
must name an offered tool and be well-formed; otherwise the whole run stays text. So a call
shown in the middle of prose (text follows it) or in a fenced code sample stays text.

Streaming: text at the start of a line that may still begin a call is held back until it is
clear (then released as text, or converted at the end of the answer); whitespace at the end of
what arrived waits for the next character; everything else is released at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

# What ``ToolCallRescuer.feed``/``finish`` give: text to show, or a call to make.


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    input: dict[str, Any]
    form: str  # xml | xml_wrapped | json


Piece = Text | Call

FORMS = ("xml", "xml_wrapped", "json")

_WRAP_OPEN = "<tool_call>"
_WRAP_CLOSE = "</tool_call>"
_FUNCTION = "<function="
_FUNCTION_CLOSE = "</function>"
_PARAMETER = "<parameter="
_PARAMETER_CLOSE = "</parameter>"
_FENCE = "```"
_WS = " \t\r\n"
_MAX_NAME = 256  # a tool or parameter name longer than this is not one


class _More(Exception):
    """The text so far may still become a call: wait for more."""


class _No(Exception):
    """The text is not a call (of an offered tool)."""


def _schema_types(schema: Any) -> dict[str, set[str]]:
    """Parameter name → the JSON types its schema allows (empty: unknown)."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    types: dict[str, set[str]] = {}
    if not isinstance(properties, dict):
        return types
    for key, spec in properties.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if isinstance(kind, str):
            types[key] = {kind}
        elif isinstance(kind, list):
            types[key] = {item for item in kind if isinstance(item, str)}
        else:
            types[key] = set()
    return types


def offered_tools(tools: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, set[str]]]:
    """Ollama function tools (``translate_request`` output) → name → parameter types."""
    offered: dict[str, dict[str, set[str]]] = {}
    for tool in tools:
        function = tool.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            offered[function["name"]] = _schema_types(function.get("parameters"))
    return offered


def _value(raw: str, types: set[str]) -> Any:
    """A parameter value: the string (less the one newline qwen3-coder puts on each side), or
    its JSON value when the schema says the parameter is not a string."""
    if raw.startswith("\n"):
        raw = raw[1:]
    if raw.endswith("\n"):
        raw = raw[:-1]
    if not types or "string" in types:
        return raw
    try:
        return orjson.loads(raw.strip())
    except orjson.JSONDecodeError:
        return raw


class _Parser:
    """Parses calls from ``text`` (the candidate run) at a position; raises _More / _No."""

    def __init__(self, text: str, offered: dict[str, dict[str, set[str]]], final: bool) -> None:
        self.text = text
        self.offered = offered
        self.final = final

    def _more(self) -> _More | _No:
        return _No() if self.final else _More()

    def skip_ws(self, at: int) -> int:
        text = self.text
        while at < len(text) and text[at] in _WS:
            at += 1
        return at

    def literal(self, at: int, word: str) -> int:
        """Position after ``word`` at ``at``; _More if the text ends inside it, _No if not it."""
        rest = self.text[at : at + len(word)]
        if rest == word:
            return at + len(word)
        if word.startswith(rest):
            raise self._more()
        raise _No()

    def starts(self, at: int, word: str) -> bool | None:
        """True if ``word`` is at ``at``, None if the text ends inside a prefix of it."""
        rest = self.text[at : at + len(word)]
        if rest == word:
            return True
        if word.startswith(rest):
            return None
        return False

    def name_until(self, at: int, end: str, prefixes: Sequence[str] | None) -> tuple[str, int]:
        """A name up to ``end`` (no whitespace or tag characters in it). With ``prefixes``,
        a partial name that begins none of them is already _No."""
        text = self.text
        stop = text.find(end, at, at + _MAX_NAME + len(end))
        name = text[at:stop] if stop >= 0 else text[at : at + _MAX_NAME + 1]
        if not name or any(c in _WS or c in "<>\"'\\{}" for c in name):
            if stop < 0 and not name:
                raise self._more()
            raise _No()
        if stop < 0:
            if len(name) > _MAX_NAME or (
                prefixes is not None and not any(p.startswith(name) for p in prefixes)
            ):
                raise _No()
            raise self._more()
        return name, stop + len(end)

    # -- one call
    def call(self, at: int) -> tuple[Call, int]:
        wrapped = self.starts(at, _WRAP_OPEN)
        if wrapped is None:
            raise self._more()
        if wrapped:
            inner = self.skip_ws(at + len(_WRAP_OPEN))
            if inner == len(self.text):
                raise self._more()
            if self.text[inner] == "{":
                found, end = self.json_call(inner)
                form = "json"
            else:
                found, end = self.xml_call(inner)
                form = "xml_wrapped"
            end = self.skip_ws(end)
            close = self.starts(end, _WRAP_CLOSE)
            if close:
                end += len(_WRAP_CLOSE)
            elif close is None and not (self.final and end == len(self.text)):
                raise self._more()  # a missing </tool_call> is fine only at the very end
            elif close is False:
                raise _No()
            return Call(found.name, found.input, form), end
        if self.text[at] == "{":
            return self.json_call(at)
        return self.xml_call(at)

    def xml_call(self, at: int) -> tuple[Call, int]:
        at = self.literal(at, _FUNCTION)
        name, at = self.name_until(at, ">", list(self.offered))
        types = self.offered.get(name)
        if types is None:
            raise _No()
        arguments: dict[str, Any] = {}
        while True:
            at = self.skip_ws(at)
            if at == len(self.text):
                raise self._more()
            closing = self.starts(at, _FUNCTION_CLOSE)
            if closing:
                return Call(name, arguments, "xml"), at + len(_FUNCTION_CLOSE)
            parameter = self.starts(at, _PARAMETER)
            if not parameter:
                if closing is None or parameter is None:
                    raise self._more()
                raise _No()
            key, at = self.name_until(at + len(_PARAMETER), ">", None)
            stop = self.text.find(_PARAMETER_CLOSE, at)
            if stop < 0:
                raise self._more()
            arguments[key] = _value(self.text[at:stop], types.get(key, set()))
            at = stop + len(_PARAMETER_CLOSE)

    def json_call(self, at: int) -> tuple[Call, int]:
        # The head first ({"name": "X"), so that an object that is not a call is let go early.
        head = self.literal(at, "{")
        head = self.skip_ws(head)
        head = self.literal(head, '"name"')
        head = self.skip_ws(head)
        head = self.literal(head, ":")
        head = self.skip_ws(head)
        head = self.literal(head, '"')
        name, _ = self.name_until(head, '"', list(self.offered))
        if name not in self.offered:
            raise _No()
        end = _object_end(self.text, at)
        if end is None:
            raise self._more()
        try:
            data = orjson.loads(self.text[at:end])
        except orjson.JSONDecodeError:
            raise _No() from None
        if not isinstance(data, dict) or data.get("name") != name:
            raise _No()
        extra = set(data) - {"name", "arguments", "parameters"}
        arguments = data.get("arguments", data.get("parameters", {}))
        if isinstance(arguments, str):  # OpenAI style: the arguments as a JSON string
            try:
                arguments = orjson.loads(arguments) if arguments.strip() else {}
            except orjson.JSONDecodeError:
                raise _No() from None
        if (
            extra
            or not isinstance(arguments, dict)
            or ("arguments" in data and "parameters" in data)
        ):
            raise _No()
        return Call(name, arguments, "json"), end

    # -- the run of calls from ``at`` to the end
    def run(self, at: int) -> list[Call]:
        calls: list[Call] = []
        while True:
            at = self.skip_ws(at)
            if at == len(self.text):
                if self.final and calls:
                    return calls
                raise self._more()
            found, at = self.call(at)
            calls.append(found)


def _object_end(text: str, at: int) -> int | None:
    """The position after the JSON object that starts at ``at`` (strings respected), or None
    when the text ends before it closes."""
    depth = 0
    in_string = False
    escaped = False
    for index in range(at, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def _fences(fenced: bool, run: int, text: str) -> tuple[bool, int]:
    """The fence state after ``text`` follows released text that was ``fenced`` and ended with
    ``run`` backticks: each run of backticks counts ``len // 3`` fences (as ``str.count("```")``
    of the whole text does), whatever the chunks it arrived in. Returns (fenced, trailing run)."""
    if "`" not in text:
        return fenced, 0
    for char in text:
        if char == "`":
            run += 1
            if run % 3 == 0:
                fenced = not fenced
        else:
            run = 0
    return fenced, run


def parse_calls(text: str, tools: Sequence[Mapping[str, Any]]) -> list[Call] | None:
    """The calls ``text`` (a whole candidate run, e.g. a complete answer after its prose) is
    made of, or None when it is not only calls of offered tools."""
    try:
        return _Parser(text, offered_tools(tools), final=True).run(0)
    except (_More, _No):
        return None


class ToolCallRescuer:
    """Feed answer text as it arrives; get ``Text`` to show now and, at ``finish``, the ``Call``s
    the answer ended with. See the module docstring for the rule."""

    __slots__ = ("_blank", "_fenced", "_held", "_line_start", "_offered", "_run")

    def __init__(self, tools: Sequence[Mapping[str, Any]]) -> None:
        self._offered = offered_tools(tools)
        self._line_start = True  # at the start of the answer or of a line (spaces aside)
        self._fenced = False  # inside a ``` block
        self._run = 0  # backticks at the end of what was released (a fence split across chunks)
        self._blank = ""  # whitespace held back: it may precede a call
        self._held: str | None = None  # the candidate run, from its first character

    def _release(self, text: str, out: list[Piece]) -> None:
        """Text goes out: keeps the line-start and fence state."""
        if not text:
            return
        self._fenced, self._run = _fences(self._fenced, self._run, text)
        if out and isinstance(out[-1], Text):
            out[-1] = Text(out[-1].text + text)
        else:
            out.append(Text(text))

    def feed(self, text: str) -> list[Piece]:
        out: list[Piece] = []
        if self._offered:
            self._scan(text, out, final=False)
        else:
            self._release(text, out)
        return out

    def finish(self) -> list[Piece]:
        """The end of the answer: the held run converted, or released as text."""
        out: list[Piece] = []
        if self._held is not None:
            self._scan("", out, final=True)
        blank, self._blank = self._blank, ""
        self._release(blank, out)
        return out

    def release_held(self) -> list[Piece]:
        """Everything held back, as text and unconverted (a structured tool call from Ollama
        follows: the held text is no call of its own); the rescue starts again at a line
        start, as after any block."""
        out: list[Piece] = []
        text = self._blank + (self._held or "")
        self._held = None
        self._blank = ""
        self._release(text, out)
        self._line_start = True
        return out

    def _scan(self, text: str, out: list[Piece], *, final: bool) -> None:
        while True:
            if self._held is not None:
                self._held += text
                text = ""
                held = self._held
                try:
                    calls = _Parser(held, self._offered, final).run(0)
                except _More:
                    return
                except _No:
                    # Not a call run: its first character is text, the rest is looked at again.
                    self._held = None
                    blank, self._blank = self._blank, ""
                    self._line_start = False
                    self._release(blank + held[0], out)
                    text = held[1:]
                    if not text:
                        return
                    continue
                self._held = None
                self._blank = ""
                out.extend(calls)
                return
            if not text:
                return
            text = self._plain(text, out)
            if self._held is None:
                return

    def _plain(self, text: str, out: list[Piece]) -> str:
        """Release ``text`` up to a candidate (then held, the rest returned to scan)."""
        start = 0
        line_start = self._line_start
        for index, char in enumerate(text):
            if line_start and char in "<{" and not self._fenced_at(text, start, index):
                before = text[start:index]
                stripped = before.rstrip(_WS)
                self._release_with_blank(stripped, out)
                self._blank += before[len(stripped) :]
                self._held = ""
                self._line_start = True
                return text[index:]
            if char == "\n":
                line_start = True
            elif char not in " \t\r":
                line_start = False
        self._line_start = line_start
        # whitespace at the end waits: it may be followed by a call
        stripped = text[start:].rstrip(_WS)
        if stripped:
            self._release_with_blank(stripped, out)
        self._blank += text[start + len(stripped) :]
        return ""

    def _fenced_at(self, text: str, start: int, index: int) -> bool:
        """Whether position ``index`` of ``text`` is inside a ``` block."""
        fenced, _run = _fences(self._fenced, self._run, self._blank + text[start:index])
        return fenced

    def _release_with_blank(self, text: str, out: list[Piece]) -> None:
        if not text:
            return
        blank, self._blank = self._blank, ""
        self._release(blank + text, out)
