"""Golden tests of the pure Anthropic <-> Ollama translation."""

from __future__ import annotations

import itertools

import orjson
import pytest

from vastllm.proxy.errors import ProxyError
from vastllm.proxy.translate import (
    ResponseAssembler,
    build_chat,
    estimate_prompt_tokens,
    parse_request,
    prompt_tokens,
    replay_events,
)


def body(**fields):
    base = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
    }
    base.update(fields)
    return base


def chat_for(request_body, *, stream=False, thinking_capable=False, backend="qwen3-coder:30b"):
    request = parse_request(request_body)
    return build_chat(request, backend, stream=stream, supports_thinking=thinking_capable)


# ----------------------------------------------------------------------------- requests


def test_minimal_request_golden():
    assert chat_for(body()) == {
        "model": "qwen3-coder:30b",
        "messages": ({"role": "user", "content": "hi"},),
        "stream": False,
        "options": {"num_predict": 64},
    }


def test_system_string_and_text_blocks_give_the_same_system_message():
    as_string = chat_for(body(system="be brief"))
    as_blocks = chat_for(
        body(
            system=[
                {"type": "text", "text": "be", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "brief"},
            ]
        )
    )
    assert as_string["messages"][0] == {"role": "system", "content": "be brief"}
    assert as_blocks["messages"][0] == {"role": "system", "content": "be\n\nbrief"}


def test_claude_code_billing_line_is_not_sent_to_the_model():
    chat = chat_for(
        body(
            system=[
                {
                    "type": "text",
                    "text": "x-anthropic-billing-header: cc_version=2.1.197; cc_entrypoint=cli;",
                },
                {
                    "type": "text",
                    "text": "You are Claude Code.",
                    "cache_control": {"type": "ephemeral"},
                },
            ]
        )
    )
    assert chat["messages"][0] == {"role": "system", "content": "You are Claude Code."}


def test_text_and_image_blocks():
    chat = chat_for(
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/png",
                                "data": "iVBOR",
                            },
                        },
                        {
                            "type": "text",
                            "text": "be short",
                            "cache_control": {"type": "ephemeral"},
                        },
                    ],
                }
            ]
        )
    )
    assert chat["messages"] == (
        {"role": "user", "content": "what is this?\nbe short", "images": ["iVBOR"]},
    )


def test_url_image_is_rejected_naming_the_field():
    with pytest.raises(ProxyError) as info:
        parse_request(
            body(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}
                        ],
                    }
                ]
            )
        )
    assert info.value.status == 400
    assert "messages.0.content.0.source.type" in info.value.message


def test_tool_use_round_trip_messages_golden():
    chat = chat_for(
        body(
            tools=[
                {
                    "name": "get_weather",
                    "description": "weather",
                    "input_schema": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                }
            ],
            messages=[
                {"role": "user", "content": "weather in Oslo?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "need the tool", "signature": "x"},
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Oslo"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12 C"},
                        {"type": "text", "text": "and tomorrow?"},
                    ],
                },
            ],
        )
    )
    assert chat["tools"] == (
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        },
    )
    assert chat["messages"] == (
        {"role": "user", "content": "weather in Oslo?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "thinking": "need the tool",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
        },
        {"role": "tool", "content": "12 C", "tool_name": "get_weather"},
        {"role": "user", "content": "and tomorrow?"},
    )


def test_tool_result_blocks_and_is_error():
    chat = chat_for(
        body(
            messages=[
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t9", "name": "run", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t9",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "exit 1"},
                                {
                                    "type": "image",
                                    "source": {
                                        "type": "base64",
                                        "media_type": "image/png",
                                        "data": "AAA",
                                    },
                                },
                            ],
                        }
                    ],
                },
            ]
        )
    )
    assert chat["messages"][-1] == {
        "role": "tool",
        "content": "Error: exit 1",
        "tool_name": "run",
        "images": ["AAA"],
    }
    # only tool results: no empty user message follows
    assert len(chat["messages"]) == 2


def test_empty_schema_and_defer_loading_tool_tolerated():
    chat = chat_for(body(tools=[{"name": "Later", "input_schema": {}, "defer_loading": True}]))
    assert chat["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}


def test_server_tools_without_schema_are_left_out():
    chat = chat_for(body(tools=[{"type": "web_search_20250305", "name": "web_search"}]))
    assert "tools" not in chat


TOOLS = [
    {"name": "a", "input_schema": {"type": "object"}},
    {"name": "b", "input_schema": {"type": "object"}},
]


def test_tool_choice_auto_sends_all_tools_without_instruction():
    chat = chat_for(body(tools=TOOLS, tool_choice={"type": "auto"}))
    assert [t["function"]["name"] for t in chat["tools"]] == ["a", "b"]
    assert chat["messages"][0]["role"] == "user"


def test_tool_choice_none_sends_no_tools():
    chat = chat_for(body(tools=TOOLS, tool_choice={"type": "none"}))
    assert "tools" not in chat


def test_tool_choice_any_instructs_in_system_prompt():
    chat = chat_for(body(system="sys", tools=TOOLS, tool_choice={"type": "any"}))
    assert len(chat["tools"]) == 2
    assert chat["messages"][0] == {
        "role": "system",
        "content": "sys\n\nYou must answer by calling one of the provided tools.",
    }


def test_tool_choice_tool_offers_only_that_tool_and_says_so():
    chat = chat_for(body(tools=TOOLS, tool_choice={"type": "tool", "name": "b"}))
    assert [t["function"]["name"] for t in chat["tools"]] == ["b"]
    assert chat["messages"][0] == {
        "role": "system",
        "content": "You must answer by calling the tool `b`.",
    }


def test_tool_choice_unknown_tool_is_400():
    with pytest.raises(ProxyError, match=r"tool_choice.name: no tool named 'c'"):
        parse_request(body(tools=TOOLS, tool_choice={"type": "tool", "name": "c"}))


def test_sampling_options_golden():
    chat = chat_for(
        body(
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            stop_sequences=["END"],
            metadata={"user_id": "u1"},
            context_management={"x": 1},
        )
    )
    assert chat["options"] == {"num_predict": 64, "temperature": 0.2, "top_p": 0.9, "top_k": 40}
    assert "stop" not in chat["options"]  # matched by the proxy, which reports which one


def test_thinking_forwarded_only_to_capable_models():
    thinking = {"type": "enabled", "budget_tokens": 31999}
    assert (
        chat_for(body(thinking=thinking, max_tokens=32000), thinking_capable=True)["think"] is True
    )
    assert "think" not in chat_for(body(thinking=thinking), thinking_capable=False)
    assert chat_for(body(), thinking_capable=True)["think"] is False


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"model": ""}, "model"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages.0.content.0.text",
        ),
        ({"temperature": 1.5}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"stop_sequences": [""]}, "stop_sequences.0"),
        ({"stream": "yes"}, "stream"),
        ({"system": 7}, "system"),
        ({"tools": [{"input_schema": {}}]}, "tools.0.name"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"thinking": {"type": "maybe"}}, "thinking.type"),
    ],
)
def test_invalid_fields_are_400_naming_the_field(fields, field_name):
    with pytest.raises(ProxyError) as info:
        parse_request(body(**fields))
    assert info.value.status == 400
    assert info.value.error_type == "invalid_request_error"
    assert info.value.message.startswith(field_name + ":")


def test_missing_max_tokens_allowed_for_count_tokens_only():
    request = body()
    del request["max_tokens"]
    with pytest.raises(ProxyError, match="max_tokens: field required"):
        parse_request(request)
    assert parse_request(request, count_only=True).max_tokens is None


def test_system_role_inside_messages_as_claude_code_sends_it():
    chat = chat_for(
        body(
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "system", "content": "Available agent types: ..."},
                {"role": "system", "content": [{"type": "text", "text": "more"}]},
            ]
        )
    )
    assert chat["messages"] == (
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "Available agent types: ..."},
        {"role": "system", "content": "more"},
    )


def test_unknown_block_types_are_tolerated():
    chat = chat_for(
        body(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "x"}, {"type": "future_block", "foo": 1}],
                }
            ]
        )
    )
    assert chat["messages"] == ({"role": "user", "content": "x"},)


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
