"""Golden tests of the pure Ollama -> Anthropic answer translation (and the usage figures)."""

from __future__ import annotations

import itertools

import orjson
import pytest

from vastllm.proxy.translate_response import (
    ResponseAssembler,
    estimate_prompt_tokens,
    output_tokens,
    prompt_tokens,
    replay_events,
    sane_count,
)

# ----------------------------------------------------------------------------- responses


def ids():
    counter = itertools.count(1)
    return lambda: f"toolu_{next(counter)}"


def assemble(chunks, **kwargs):
    asm = ResponseAssembler(message_id="msg_1", model="claude-x", new_tool_id=ids(), **kwargs)
    events = list(asm.start_events())
    for chunk in chunks:
        events.extend(asm.feed(chunk))
    return asm, events


def text_chunks(*parts, reason="stop", prompt=11, generated=None):
    chunks = [{"message": {"role": "assistant", "content": p}, "done": False} for p in parts]
    chunks.append(
        {
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": reason,
            "prompt_eval_count": prompt,
            "eval_count": generated if generated is not None else len(parts),
        }
    )
    return chunks


def test_text_answer_golden_message_and_events():
    asm, events = assemble(text_chunks("Hel", "lo"))
    assert asm.message() == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 2},
    }
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert events[6][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"input_tokens": 11, "output_tokens": 2},
    }


def test_length_maps_to_max_tokens():
    asm, _ = assemble(text_chunks("a", reason="length"))
    assert asm.stop_reason == "max_tokens"


def test_tool_call_maps_to_tool_use_block_and_stop_reason():
    chunks = [
        {
            "message": {
                "role": "assistant",
                "content": "Let me check.",
            },
            "done": False,
        },
        {
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
                ],
            },
            "done": False,
        },
        {
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 5,
            "eval_count": 9,
        },
    ]
    asm, events = assemble(chunks)
    assert asm.message()["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
    ]
    assert asm.stop_reason == "tool_use"
    starts = [e for n, e in events if n == "content_block_start"]
    assert starts[1] == {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
    }
    deltas = [e["delta"] for n, e in events if n == "content_block_delta"]
    assert deltas[-1] == {"type": "input_json_delta", "partial_json": '{"city":"Oslo"}'}


def test_tool_call_arguments_as_json_string():
    chunks = [
        {
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}],
            },
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 1,
            "eval_count": 1,
        }
    ]
    asm, _ = assemble(chunks)
    assert asm.message()["content"][0]["input"] == {"a": 1}


def test_stop_sequence_across_chunks_cuts_text_and_reports_it():
    asm, events = assemble(text_chunks("one two ST", "OP three"), stop_sequences=("STOP", "zzz"))
    assert asm.finished
    assert asm.message()["content"] == [{"type": "text", "text": "one two "}]
    assert asm.stop_reason == "stop_sequence"
    assert asm.stop_sequence == "STOP"
    text = "".join(e["delta"]["text"] for n, e in events if n == "content_block_delta")
    assert text == "one two "
    assert [n for n, _ in events][-2:] == ["message_delta", "message_stop"]


def test_held_back_prefix_is_released_when_no_stop_follows():
    asm, _ = assemble(text_chunks("abc S", "x end"), stop_sequences=("STOP",))
    assert asm.message()["content"][0]["text"] == "abc Sx end"
    assert asm.stop_reason == "end_turn"


def test_earliest_stop_sequence_wins():
    asm, _ = assemble(text_chunks("a B c A"), stop_sequences=("A", "B"))
    assert (asm.message()["content"][0]["text"], asm.stop_sequence) == ("a ", "B")


def test_thinking_chunks_become_thinking_block_when_requested():
    chunks = [
        {"message": {"role": "assistant", "content": "", "thinking": "hmm"}, "done": False},
        {"message": {"role": "assistant", "content": "ok"}, "done": False},
        {
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 3,
            "eval_count": 2,
        },
    ]
    asm, events = assemble(chunks, thinking=True)
    assert asm.message()["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": ""},
        {"type": "text", "text": "ok"},
    ]
    assert (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hmm"},
        },
    ) in events
    dropped, _ = assemble(chunks, thinking=False)
    assert dropped.message()["content"] == [{"type": "text", "text": "ok"}]


def test_chunks_of_one_read_give_one_delta_per_block():
    """Chunks fed into one list (what one network read brought) merge into one delta event per
    block and kind; the stream says the same as chunk by chunk, with fewer events."""
    chunks = [
        {"message": {"role": "assistant", "content": "", "thinking": "a"}, "done": False},
        {"message": {"role": "assistant", "content": "", "thinking": "b"}, "done": False},
        {"message": {"role": "assistant", "content": "Hel"}, "done": False},
        {"message": {"role": "assistant", "content": "lo"}, "done": False},
    ]
    asm = ResponseAssembler(message_id="msg_1", model="claude-x", new_tool_id=ids(), thinking=True)
    events: list = []
    for chunk in chunks:
        assert asm.feed(chunk, events) is events
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert deltas == [
        {"type": "thinking_delta", "thinking": "ab"},
        {"type": "text_delta", "text": "Hello"},
    ]
    one_by_one, _ = assemble(chunks, thinking=True)
    assert asm.message()["content"] == one_by_one.message()["content"]
    later = asm.feed({"message": {"role": "assistant", "content": "!"}, "done": False})
    assert later == [  # a new list: a new event
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "text_delta", "text": "!"},
            },
        )
    ]


def test_non_streaming_single_final_json():
    asm, events = assemble(
        [
            {
                "message": {"role": "assistant", "content": "whole"},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 4,
                "eval_count": 1,
            }
        ],
        emit=False,
    )
    assert events[2:] == []
    assert asm.message()["content"] == [{"type": "text", "text": "whole"}]


def test_replay_matches_live_stream_for_the_same_message():
    chunks = [
        {"message": {"role": "assistant", "content": "", "thinking": "t"}, "done": False},
        {"message": {"role": "assistant", "content": "Hi"}, "done": False},
        {
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": {"x": [1]}}}],
            },
            "done": False,
        },
        {
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 7,
            "eval_count": 3,
            "message": {"role": "assistant", "content": ""},
        },
    ]
    asm, live = assemble(chunks, thinking=True)
    replay = replay_events(orjson.loads(orjson.dumps(asm.message())))
    assert [n for n, _ in replay] == [n for n, _ in live]
    assert [e for n, e in replay if n == "content_block_delta"] == [
        e for n, e in live if n == "content_block_delta"
    ]
    assert replay[-2][1]["delta"] == live[-2][1]["delta"]


# ----------------------------------------------------------------------------- usage


def test_prompt_estimate_counts_message_text_and_tools():
    chat = {
        "messages": [
            {"role": "system", "content": "a" * 400},
            {"role": "user", "content": "b" * 40},
        ],
        "tools": [{"type": "function", "function": {"name": "t"}}],
    }
    tools_chars = len(orjson.dumps(chat["tools"]))
    assert estimate_prompt_tokens(chat) == (440 + tools_chars) // 4
    assert estimate_prompt_tokens({"messages": []}) == 0


@pytest.mark.parametrize(
    ("reported", "estimate", "expected"),
    [
        (120, 100, 120),  # Ollama's count is trusted when it is plausible
        (60, 100, 60),
        (3, 5000, 5000),  # prompt cache reuse: Ollama counted only the new tokens
        (None, 42, 42),  # no count at all
    ],
)
def test_prompt_tokens(reported, estimate, expected):
    assert prompt_tokens(reported, estimate) == expected


def test_usage_falls_back_to_the_estimate_when_ollama_reused_its_cache():
    asm, _ = assemble(text_chunks("hi", prompt=4), input_estimate=20000)
    assert asm.message()["usage"]["input_tokens"] == 20000


def test_stop_sequence_answer_reports_the_estimate_not_zero():
    asm, _ = assemble(
        text_chunks("one ", "two ", "three"), stop_sequences=("two",), input_estimate=77
    )
    message = asm.message()
    assert message["stop_reason"] == "stop_sequence"
    assert message["usage"]["input_tokens"] == 77


def test_tool_call_cut_by_length_is_max_tokens():
    chunks = [
        {
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "x"}}}],
            },
            "done": False,
        },
        {"message": {"content": ""}, "done": True, "done_reason": "length", "eval_count": 5},
    ]
    asm, _ = assemble(chunks)
    assert asm.message()["stop_reason"] == "max_tokens"


# ------------------------------------------------------------ issue 8: backend numbers


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (7, 7), (10_000_000, 10_000_000), (-7, None), (10_000_001, None), (True, None),
     (3.0, None), ("5", None), (None, None)],
)  # fmt: skip
def test_sane_count(value, expected):
    assert sane_count(value) == expected


@pytest.mark.parametrize(
    ("reported", "counted", "max_tokens", "expected"),
    [(5, 3, None, 5), (-7, 3, None, 3), (0, 3, None, 3), (2**40, 3, None, 3), (90, 3, 50, 50),
     (-7, 80, 50, 50)],
)  # fmt: skip
def test_output_tokens(reported, counted, max_tokens, expected):
    assert output_tokens(reported, counted, max_tokens) == expected


@pytest.mark.parametrize(("reported", "expected"), [(-5, 40), (True, 40), (2**40, 40), (50, 50)])
def test_prompt_tokens_ignores_absurd_counts(reported, expected):
    assert prompt_tokens(reported, 40) == expected


def test_negative_eval_count_is_never_reported():
    assembler = ResponseAssembler(message_id="msg_1", model="m", emit=False)
    assembler.feed({"message": {"content": "a"}})
    assembler.feed({"message": {"content": ""}, "done": True, "eval_count": -7,
                    "prompt_eval_count": -1})  # fmt: skip
    assert assembler.usage() == {"input_tokens": 0, "output_tokens": 1}


def test_the_answer_stops_after_max_tokens_chunks():
    assembler = ResponseAssembler(message_id="msg_1", model="m", max_tokens=3)
    events = []
    for _ in range(10):
        events += assembler.feed({"message": {"content": "x"}, "done": False})
        if assembler.finished:
            break
    assert assembler.finished
    assert assembler.cut_short
    assert assembler.stop_reason == "max_tokens"
    assert assembler.message()["content"] == [{"type": "text", "text": "xxx"}]
    assert assembler.usage()["output_tokens"] == 3
    assert [name for name, _ in events][-2:] == ["message_delta", "message_stop"]


def test_a_done_chunk_right_after_max_tokens_ends_normally():
    assembler = ResponseAssembler(message_id="msg_1", model="m", max_tokens=2)
    for text in ("a", "b"):
        assembler.feed({"message": {"content": text}, "done": False})
    assert not assembler.finished
    assembler.feed({"message": {"content": ""}, "done": True, "done_reason": "length",
                    "eval_count": 2, "prompt_eval_count": 9})  # fmt: skip
    assert assembler.finished
    assert not assembler.cut_short
    assert (assembler.stop_reason, assembler.usage()) == (
        "max_tokens",
        {"input_tokens": 9, "output_tokens": 2},
    )
