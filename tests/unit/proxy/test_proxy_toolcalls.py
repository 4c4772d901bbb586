"""Tool calls written as text (qwen3-coder XML, wrapped, bare JSON) → tool_use: the pure rescue
(``toolcalls``) and its use by ``ResponseAssembler``, split at every point when streamed."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vastllm.proxy.toolcalls import Call, Text, ToolCallRescuer, parse_calls
from vastllm.proxy.translate_response import ResponseAssembler


def tool(name: str, **properties: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": "",
            "parameters": {
                "type": "object",
                "properties": {key: {"type": kind} for key, kind in properties.items()},
            },
        },
    }


TOOLS = [
    tool("Bash", command="string", timeout="integer"),
    tool("Write", file_path="string", content="string"),
    tool("Todo", items="array", done="boolean", meta="object"),
]
XML = "<function=Bash>\n<parameter=command>\nls -la\n</parameter>\n</function>"
XML_ONE_LINE = "<function=Bash><parameter=command>ls -la</parameter></function>"
WRAPPED = "<tool_call>\n" + XML + "\n</tool_call>"
JSON = '{"name": "Bash", "arguments": {"command": "ls -la"}}'
BASH_LS = Call("Bash", {"command": "ls -la"}, "xml")


def rescue(text: str, cuts: list[int] | None = None, tools: list[Any] = TOOLS) -> list[Any]:
    """The pieces for ``text`` fed in parts cut at ``cuts``, adjacent texts joined."""
    rescuer = ToolCallRescuer(tools)
    bounds = [0, *(cuts or []), len(text)]
    pieces: list[Any] = []
    for start, end in itertools.pairwise(bounds):
        pieces += rescuer.feed(text[start:end])
    pieces += rescuer.finish()
    joined: list[Any] = []
    for piece in pieces:
        if joined and isinstance(piece, Text) and isinstance(joined[-1], Text):
            joined[-1] = Text(joined[-1].text + piece.text)
        else:
            joined.append(piece)
    return joined


def every_split(text: str) -> list[list[Any]]:
    """The result for one cut at every position and for one character at a time."""
    results = [rescue(text, [cut]) for cut in range(1, len(text))]
    results.append(rescue(text, list(range(1, len(text)))))
    return results


CASES = [
    (XML, [BASH_LS]),
    (XML_ONE_LINE, [BASH_LS]),
    (WRAPPED, [Call("Bash", {"command": "ls -la"}, "xml_wrapped")]),
    (JSON, [Call("Bash", {"command": "ls -la"}, "json")]),
    (
        '{"name": "Bash", "parameters": {"command": "ls -la"}}',
        [Call("Bash", {"command": "ls -la"}, "json")],
    ),
    (
        '<tool_call>\n{"name": "Bash", "arguments": {"command": "ls -la"}}\n</tool_call>',
        [Call("Bash", {"command": "ls -la"}, "json")],
    ),
    ("\n\n  " + XML + "\n\n", [BASH_LS]),  # whitespace around: dropped
    ("I will list the files.\n" + XML, [Text("I will list the files."), BASH_LS]),
    ("I will list the files.\n\n" + XML_ONE_LINE + "\n", [Text("I will list the files."), BASH_LS]),
    (XML + "\n" + JSON, [BASH_LS, Call("Bash", {"command": "ls -la"}, "json")]),  # several calls
    (WRAPPED + WRAPPED, [Call("Bash", {"command": "ls -la"}, "xml_wrapped")] * 2),
    (
        "<tool_call>\n" + XML,
        [Call("Bash", {"command": "ls -la"}, "xml_wrapped")],
    ),  # no closing tag at the end
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_calls_are_recognized_whole_and_split_at_every_point(text, expected):
    assert rescue(text) == expected
    for result in every_split(text):
        assert result == expected


STAYS_TEXT = [
    # a call in the middle of prose: text follows it
    "Run it like this:\n" + XML + "\nand you will see the files.",
    XML + "\nThat is how I would call it.",
    # not at the start of a line
    "The call " + XML_ONE_LINE,
    # inside a fenced code sample
    "Example:\n```\n" + XML + "\n```",
    "```xml\n" + XML + "\n",
    # unknown tool names
    "<function=Delete><parameter=path>/</parameter></function>",
    '{"name": "Delete", "arguments": {"path": "/"}}',
    "<function=Bas><parameter=command>ls</parameter></function>",
    # malformed markup
    "<function=Bash><parameter=command>ls</function>",
    "<function=Bash><parameter=command>ls</parameter>",
    "<function=Bash>\n<parameter=command>\nls\n</parameter>\n</function",
    "<function=Bash><param=command>ls</param></function>",
    "<function=Bash ><parameter=command>ls</parameter></function>",
    "<tool_call>\n" + XML + "\n</tool_cal>",
    '{"name": "Bash", "arguments": {"command": "ls"}',
    '{"name": "Bash", "arguments": "not json"}',
    '{"name": "Bash", "arguments": {"command": "ls"}, "extra": 1}',
    '{"arguments": {"command": "ls"}, "name": "Bash"}',
    # one good call, then something that is not one: the whole run stays text
    XML + "\n<function=Bash>oops</function>",
    # ordinary prose, markup and JSON
    'Hello <b>world</b>\n<div>\n{"a": 1}\n',
    '{"name": "value"}',
]


@pytest.mark.parametrize("text", STAYS_TEXT)
def test_text_that_is_not_a_trailing_call_run_stays_text_exactly(text):
    assert rescue(text) == [Text(text)]
    for result in every_split(text):
        assert result == [Text(text)]


def test_without_tools_nothing_is_held_or_converted():
    rescuer = ToolCallRescuer([])
    assert rescuer.feed(XML[:5]) == [Text(XML[:5])]
    assert rescuer.feed(XML[5:]) == [Text(XML[5:])]
    assert rescuer.finish() == []


def test_prose_streams_at_once_and_only_a_possible_call_waits():
    rescuer = ToolCallRescuer(TOOLS)
    assert rescuer.feed("Hello, I will") == [Text("Hello, I will")]
    assert rescuer.feed(" look <b>here</b>.") == [Text(" look <b>here</b>.")]
    assert rescuer.feed("\n") == []  # whitespace waits for the next character
    assert rescuer.feed("Next line") == [Text("\nNext line")]
    assert rescuer.feed("\n<fun") == []  # may begin a call at the start of a line
    assert rescuer.feed("ny>") == [Text("\n<funny>")]  # clear: not a call, released
    assert rescuer.feed("\n<function=Ba") == []
    assert rescuer.feed("d>") == [Text("\n<function=Bad>")]  # not an offered tool
    assert rescuer.feed('\n{"name": "Wr') == []
    assert rescuer.feed("ite") == []
    assert rescuer.feed('", "arguments": {"file_path": "/a", "content": "x"}}') == []
    assert rescuer.finish() == [Call("Write", {"file_path": "/a", "content": "x"}, "json")]


def test_a_complete_call_followed_by_prose_is_released_as_text_when_the_prose_comes():
    rescuer = ToolCallRescuer(TOOLS)
    assert rescuer.feed(XML_ONE_LINE) == []
    assert rescuer.feed("\n") == []
    assert rescuer.feed("done") == [Text(XML_ONE_LINE + "\ndone")]
    assert rescuer.finish() == []


def test_values_are_typed_by_the_schema_and_trimmed_of_one_newline():
    text = (
        "<function=Todo>\n"
        "<parameter=items>\n[1, 2]\n</parameter>\n"
        "<parameter=done>\ntrue\n</parameter>\n"
        '<parameter=meta>\n{"a": "b"}\n</parameter>\n'
        "</function>\n"
        "<function=Write>\n"
        "<parameter=file_path>\n/tmp/x.py\n</parameter>\n"
        "<parameter=content>\n\ndef f():\n    return 1\n\n</parameter>\n"
        "</function>\n"
        "<function=Bash>\n<parameter=command>\n42\n</parameter>\n"
        "<parameter=timeout>\nsoon\n</parameter>\n<parameter=other>\n7\n</parameter>\n</function>"
    )
    assert parse_calls(text, TOOLS) == [
        Call("Todo", {"items": [1, 2], "done": True, "meta": {"a": "b"}}, "xml"),
        # only the one newline on each side goes: the content keeps its own blank lines
        Call("Write", {"file_path": "/tmp/x.py", "content": "\ndef f():\n    return 1\n"}, "xml"),
        # a string stays a string; a value that is not valid JSON stays as written;
        # a parameter the schema does not know stays a string
        Call("Bash", {"command": "42", "timeout": "soon", "other": "7"}, "xml"),
    ]


def test_multi_line_values_with_markup_inside():
    text = (
        "<function=Write>\n<parameter=file_path>\n/a.html\n</parameter>\n"
        "<parameter=content>\n<html>\n<function=Bash>\n</html>\n</parameter>\n</function>"
    )
    assert rescue(text) == [
        Call(
            "Write", {"file_path": "/a.html", "content": "<html>\n<function=Bash>\n</html>"}, "xml"
        )
    ]


def test_json_arguments_as_a_string_are_decoded():
    text = '{"name": "Bash", "arguments": "{\\"command\\": \\"ls\\"}"}'
    assert rescue(text) == [Call("Bash", {"command": "ls"}, "json")]


# ------------------------------------------------------------------ in the ResponseAssembler


def chunks(*texts: str, reason: str = "stop") -> list[dict[str, Any]]:
    out = [{"message": {"role": "assistant", "content": t}, "done": False} for t in texts]
    out.append(
        {
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": reason,
            "prompt_eval_count": 10,
            "eval_count": len(texts),
        }
    )
    return out


def assemble(parts: list[str], *, tools=TOOLS, emit=True, **extra):
    assembler = ResponseAssembler(
        message_id="msg_1",
        model="m",
        emit=emit,
        tools=tools,
        new_tool_id=lambda: "toolu_1",
        **extra,
    )
    events = []
    for chunk in chunks(*parts):
        events += assembler.feed(chunk)
    assert assembler.finished
    return assembler, events


@pytest.mark.parametrize("cut", range(1, len(WRAPPED)))
def test_the_assembler_turns_a_streamed_leak_into_a_tool_use_block(cut):
    text = "Let me look.\n" + WRAPPED
    assembler, events = assemble([text[: cut + 13], text[cut + 13 :]])
    message = assembler.message()
    assert message["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls -la"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert assembler.rescued == ["xml_wrapped"]
    names = [name for name, _ in events]
    assert names[-2:] == ["message_delta", "message_stop"]
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert "".join(d.get("text", "") for d in deltas) == "Let me look."
    assert deltas[-1] == {"type": "input_json_delta", "partial_json": '{"command":"ls -la"}'}


def test_the_assembler_leaves_text_alone_without_tools_or_with_prose_after():
    assembler, _ = assemble([XML], tools=())
    assert assembler.message()["content"] == [{"type": "text", "text": XML}]
    assert assembler.message()["stop_reason"] == "end_turn"
    assert assembler.rescued == []
    text = "See:\n" + XML + "\nThat is all."
    assembler, _ = assemble([text[:10], text[10:]])
    assert assembler.message()["content"] == [{"type": "text", "text": text}]
    assert assembler.message()["stop_reason"] == "end_turn"


def test_the_assembler_rescues_a_whole_non_streamed_answer():
    assembler, events = assemble([JSON], emit=False)
    assert events == []
    assert assembler.message()["content"][0]["input"] == {"command": "ls -la"}
    assert assembler.rescued == ["json"]


def test_a_call_cut_by_the_length_limit_stays_text_with_max_tokens():
    assembler = ResponseAssembler(message_id="m", model="m", tools=TOOLS, emit=False)
    for chunk in chunks(XML[:20], reason="length"):
        assembler.feed(chunk)
    assert assembler.message()["content"] == [{"type": "text", "text": XML[:20]}]
    assert assembler.message()["stop_reason"] == "max_tokens"


# ------------------------------------------------ text held by the rescue, then Ollama's own call


def structured_chunks(*texts: str, after: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """``texts`` as content chunks, then a chunk with Ollama's structured ``tool_calls``, then
    ``after`` as content chunks, then the done chunk."""
    call = {"function": {"name": "Bash", "arguments": {"command": "ls"}}}
    out = [{"message": {"role": "assistant", "content": t}, "done": False} for t in texts]
    out.append({"message": {"role": "assistant", "content": "", "tool_calls": [call]}})
    out += [{"message": {"role": "assistant", "content": t}, "done": False} for t in after]
    out.append(
        {
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 10,
            "eval_count": 3,
        }
    )
    return out


def feed_all(chunk_list: list[dict[str, Any]], *, emit: bool) -> tuple[ResponseAssembler, list]:
    assembler = ResponseAssembler(
        message_id="msg_1", model="m", emit=emit, tools=TOOLS, new_tool_id=lambda: "toolu_1"
    )
    events = list(assembler.start_events())
    for chunk in chunk_list:
        events += assembler.feed(chunk)
    assert assembler.finished
    return assembler, events


def streamed_content(events: list) -> list[dict[str, Any]]:
    """The content blocks a client rebuilds from the events (as the SDK accumulates them)."""
    blocks: list[dict[str, Any]] = []
    for name, data in events:
        if name == "content_block_start":
            assert data["index"] == len(blocks)
            blocks.append(dict(data["content_block"]))
        elif name == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                blocks[data["index"]]["text"] += delta["text"]
            elif delta["type"] == "input_json_delta":
                import json

                blocks[data["index"]]["input"] = json.loads(delta["partial_json"])
    return blocks


TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}


@pytest.mark.parametrize(
    ("texts", "after", "expected_text"),
    [
        (("Let me check.\n\n",), (), "Let me check.\n\n"),
        (("Let me check.", "\n", "\n"), (), "Let me check.\n\n"),
        (("Run:\n<",), (), "Run:\n<"),
        (("Run:\n", "<"), (), "Run:\n<"),
        (("Run:\n<func",), (), "Run:\n<func"),
        (('Run:\n{"name": "Ba',), (), 'Run:\n{"name": "Ba'),
        (("Let me check.",), ("\n\n",), "Let me check."),
        (("Let me check.\n\n",), ("\n", " "), "Let me check.\n\n"),
    ],
)
@pytest.mark.parametrize("emit", [True, False], ids=["stream", "non-stream"])
def test_text_held_by_the_rescue_is_released_before_ollamas_own_tool_call(
    texts, after, expected_text, emit
):
    """The rescue held the end of the text (whitespace, a possible call start); Ollama then
    sent a structured call: the held text goes out as text *before* the tool_use, nothing
    whitespace-only follows it."""
    assembler, events = feed_all(structured_chunks(*texts, after=after), emit=emit)
    expected = [{"type": "text", "text": expected_text}, TOOL_USE]
    assert assembler.message()["content"] == expected
    assert assembler.message()["stop_reason"] == "tool_use"
    assert assembler.rescued == []
    if emit:
        assert streamed_content(events) == expected


@pytest.mark.parametrize("emit", [True, False], ids=["stream", "non-stream"])
def test_one_chunk_with_text_and_tool_calls_and_a_whitespace_only_answer(emit):
    call = {"function": {"name": "Bash", "arguments": {"command": "ls"}}}
    done = {
        "message": {"role": "assistant", "content": "Let me check.\n\n", "tool_calls": [call]},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 10,
        "eval_count": 3,
    }
    assembler, events = feed_all([done], emit=emit)
    expected = [{"type": "text", "text": "Let me check.\n\n"}, TOOL_USE]
    assert assembler.message()["content"] == expected
    # Only whitespace before the call: no whitespace-only text block at all.
    assembler, events = feed_all(structured_chunks("\n\n", after=("\n",)), emit=emit)
    assert assembler.message()["content"] == [TOOL_USE]
    if emit:
        assert streamed_content(events) == [TOOL_USE]


def test_a_stop_sequence_in_the_held_text_ends_the_answer_before_the_call():
    assembler = ResponseAssembler(
        message_id="msg_1",
        model="m",
        emit=False,
        tools=TOOLS,
        stop_sequences=("<STOP",),
        new_tool_id=lambda: "toolu_1",
    )
    for chunk in structured_chunks("Run:\n<ST", "OP"):
        assembler.feed(chunk)
        if assembler.finished:
            break
    assert assembler.message()["content"] == [{"type": "text", "text": "Run:\n"}]
    assert assembler.message()["stop_reason"] == "stop_sequence"


# ------------------------------------------------------------ fences split across chunks


FENCED_TEXTS = [
    "Example:\n````\n" + XML + "\n````\nThen:\n" + XML,
    "````\n" + XML,
    "Example:\n````\n" + XML,
    "```\n" + XML + "\n```\n" + XML,
    "``````\n" + XML,
    "`````\n" + XML,
    "a ``` b ```` c\n" + XML,
    "```` ``\n" + JSON,
    "``\n`" + XML,
]


@pytest.mark.parametrize("text", FENCED_TEXTS)
def test_fences_split_at_every_point_decide_as_the_whole_text(text):
    whole = rescue(text)
    for result in every_split(text):
        assert result == whole
    # Two-character pieces too (a fence split 2+1, 1+2, and across three pieces).
    assert rescue(text, list(range(2, len(text), 2))) == whole
    assert rescue(text, list(range(1, len(text), 3))) == whole


def test_a_four_backtick_fence_split_after_three_is_one_fence():
    text = "````\n" + XML
    assert rescue(text) == rescue(text, [3]) == rescue(text, [3, 4])


_PIECES = st.sampled_from(
    [
        "`",
        "``",
        "```",
        "````",
        "\n",
        " ",
        "x",
        "Run:",
        "\n\n",
        XML,
        XML_ONE_LINE,
        WRAPPED,
        JSON,
        "<",
        "{",
        "<function=Bash>",
        "</function>",
        '{"name": "Bash"',
        "}",
    ]
)


_PROSE = st.lists(st.sampled_from(["`", "``", "````", "\n", " ", "x", "Run:"]), max_size=8)
_ENDING = st.sampled_from(["", "\n" + XML, "\n" + JSON, "\n" + WRAPPED, "\n" + XML + "\n"])


@given(
    parts=st.one_of(
        st.lists(_PIECES, min_size=1, max_size=10),
        st.tuples(_PROSE, _ENDING).map(lambda pair: [*pair[0], pair[1]]),
    ),
    data=st.data(),
)
@settings(max_examples=500, deadline=None, derandomize=True)
def test_streaming_at_random_split_points_equals_the_whole_text(parts, data):
    """Property: for any text made of fences, line breaks and (partial) calls, and any split
    points, the streamed pieces (adjacent texts joined) equal the whole-text result."""
    text = "".join(parts)
    if len(text) < 2:
        return
    cuts = data.draw(st.lists(st.integers(min_value=1, max_value=len(text) - 1), max_size=12))
    assert rescue(text, sorted(set(cuts))) == rescue(text)
