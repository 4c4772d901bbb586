"""Golden tests of the pure Anthropic -> Ollama request translation."""

from __future__ import annotations

import itertools

import pytest

from vastllm.proxy.errors import ProxyError
from vastllm.proxy.translate_request import build_chat, check_depth, parse_request


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
    # Ollama's qwen3-coder renderer keeps only the first system message: later ones are folded
    # into the user's turn as <system-reminder> text, in place
    chat = chat_for(
        body(
            system="be brief",
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "system", "content": "Available agent types: ..."},
                {"role": "system", "content": [{"type": "text", "text": "more"}]},
            ],
        )
    )
    assert chat["messages"] == (
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": "<system-reminder>\nAvailable agent types: ...\n</system-reminder>\n\n"
            "<system-reminder>\nmore\n</system-reminder>\n\nhi",
        },
    )


def test_a_leading_system_message_stays_the_system_prompt_when_tool_choice_forces_a_tool():
    # the forcing instruction goes after the client's own system prompt, as with a top-level one
    forced = {"type": "tool", "name": "a"}
    leading = chat_for(
        body(
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
            ],
            tools=TOOLS,
            tool_choice=forced,
        )
    )
    top = chat_for(
        body(
            system="be brief",
            messages=[{"role": "user", "content": "hi"}],
            tools=TOOLS,
            tool_choice=forced,
        )
    )
    assert leading["messages"] == top["messages"]
    assert leading["messages"][0]["content"].startswith("be brief\n\n")
    assert [m["role"] for m in leading["messages"]] == ["system", "user"]


def test_a_system_message_after_an_assistant_turn_becomes_its_own_user_message():
    chat = chat_for(
        body(
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "system", "content": "note"},
                {"role": "user", "content": "go on"},
            ],
        )
    )
    assert chat["messages"] == (
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "<system-reminder>\nnote\n</system-reminder>"},
        {"role": "user", "content": "go on"},
    )


def test_a_system_message_after_a_tool_result_is_not_merged_into_it():
    chat = chat_for(
        body(
            messages=[
                {"role": "user", "content": "read it"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}],
                },
                {"role": "system", "content": "note"},
            ],
        )
    )
    assert chat["messages"][-2:] == (
        {"role": "tool", "content": "x", "tool_name": "Read"},
        {"role": "user", "content": "<system-reminder>\nnote\n</system-reminder>"},
    )


def test_a_leading_system_message_without_a_top_level_system_is_the_system_prompt():
    chat = chat_for(
        body(
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "system", "content": "note"},
            ],
        )
    )
    assert chat["messages"] == (
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "<system-reminder>\nnote\n</system-reminder>\n\nhi"},
    )
    # with a top-level system prompt, a leading system message is a reminder like any other
    chat = chat_for(
        body(
            system="top",
            messages=[
                {"role": "system", "content": "early"},
                {"role": "user", "content": "hi"},
            ],
        )
    )
    assert chat["messages"] == (
        {"role": "system", "content": "top"},
        {"role": "user", "content": "<system-reminder>\nearly\n</system-reminder>"},
        {"role": "user", "content": "hi"},
    )


def test_a_folded_system_message_keeps_its_images_and_an_empty_one_is_dropped():
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "QQ=="},
    }
    chat = chat_for(
        body(
            messages=[
                {"role": "user", "content": [image]},
                {"role": "system", "content": [{"type": "text", "text": "see"}, image]},
                {"role": "assistant", "content": "ok"},
                {"role": "system", "content": ""},
                {"role": "user", "content": "next"},
            ],
        )
    )
    assert chat["messages"] == (
        {
            "role": "user",
            "content": "<system-reminder>\nsee\n</system-reminder>",
            "images": ["QQ==", "QQ=="],
        },
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "next"},
    )


def test_folding_keeps_every_turn_a_prefix_of_the_next():
    turns = [
        [{"role": "user", "content": "a"}, {"role": "system", "content": "s1"}],
        [
            {"role": "user", "content": "a"},
            {"role": "system", "content": "s1"},
            {"role": "assistant", "content": "b"},
            {"role": "system", "content": "s2"},
            {"role": "user", "content": "c"},
        ],
    ]
    turns.append(
        [*turns[1], {"role": "assistant", "content": "d"}, {"role": "user", "content": "e"}]
    )
    chats = [chat_for(body(system="sys", messages=m))["messages"] for m in turns]
    for before, after in itertools.pairwise(chats):
        assert after[: len(before)] == before


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


@pytest.mark.parametrize("limit", [1, 2, 5, 64])
def test_check_depth_counts_objects_and_arrays_alike(limit):
    def nest(levels):
        value = "leaf"
        for level in range(levels):
            value = [1, value] if level % 2 else {"k": value, "n": None}
        return value

    check_depth(nest(limit), "x", limit)
    check_depth("scalar", "x", 1)
    with pytest.raises(ProxyError, match=f"x: JSON nested deeper than {limit} levels"):
        check_depth(nest(limit + 1), "x", limit)
    # the deepest branch counts, wherever it is
    with pytest.raises(ProxyError):
        check_depth([{"a": 1}, [[], {"b": nest(limit)}]], "x", limit + 2)
    check_depth([{"a": 1}, [[], {"b": nest(limit)}]], "x", limit + 3)
