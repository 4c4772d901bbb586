"""Deterministic generation: text, tokens, tool calls, truncation and stop strings."""

import pytest

from vastllm_lab.ollama.generation import (
    RequestError,
    args_for_schema,
    count_tokens,
    cut_at_stop,
    find_tool_call,
    plan_reply,
    prompt_token_count,
    reply_text,
    split_tokens,
)

USER = [{"role": "user", "content": "write a function"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "weather of a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "ratio": {"type": "number"},
                "metric": {"type": "boolean"},
                "tags": {"type": "array"},
                "extra": {"type": "object"},
                "unit": {"type": "string", "enum": ["C", "F"]},
                "note": {"type": ["null", "string"]},
                "optional": {"type": "string"},
            },
            "required": ["city", "days", "ratio", "metric", "tags", "extra", "unit", "note"],
        },
    },
}


def test_reply_is_a_pure_function_of_the_conversation():
    first = reply_text("m:1", USER, [])
    assert first == reply_text("m:1", [dict(m) for m in USER], [])
    assert first.startswith("Lab reply from m:1: ")
    assert first != reply_text("m:1", [{"role": "user", "content": "write a class"}], [])
    assert first != reply_text("m:2", USER, [])
    assert first != reply_text("m:1", USER, [WEATHER])


def test_split_tokens_round_trips_and_counts_words():
    for text in ["Lab reply: a b  c", "one", "trailing space ", "  lead", "", "a\nb\tc"]:
        assert "".join(split_tokens(text)) == text
    assert split_tokens("a b c") == ["a", " b", " c"]
    assert count_tokens("a b\n c") == 3


def test_prompt_tokens_count_messages_and_tool_schemas():
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one two three"},
    ]
    assert prompt_token_count(messages, []) == 5
    assert prompt_token_count(messages, [WEATHER]) > 5
    assert prompt_token_count([{"role": "user", "content": ""}], []) == 1  # never zero


def test_args_follow_the_required_properties_types():
    assert args_for_schema(WEATHER["function"]["parameters"]) == {
        "city": "lab",
        "days": 1,
        "ratio": 1,
        "metric": True,
        "tags": [],
        "extra": {},
        "unit": "C",
        "note": "lab",
    }
    assert args_for_schema({"type": "object", "properties": {"a": {}}}) == {}
    assert args_for_schema(None) == {}


def test_tool_call_when_the_last_user_message_names_a_tool():
    messages = [{"role": "user", "content": "Please call GET_WEATHER for Paris"}]
    call = find_tool_call(messages, [WEATHER])
    assert call["function"]["name"] == "get_weather"
    assert call["function"]["arguments"]["city"] == "lab"


def test_no_tool_call_without_a_mention_tools_or_a_user_turn():
    assert find_tool_call([{"role": "user", "content": "weather please"}], [WEATHER]) is None
    assert find_tool_call([{"role": "user", "content": "get_weather_x"}], [WEATHER]) is None
    assert find_tool_call([{"role": "user", "content": "get_weather"}], []) is None
    tool_turn = [{"role": "tool", "content": "get_weather said 20C", "tool_name": "get_weather"}]
    assert find_tool_call(tool_turn, [WEATHER]) is None


def test_earliest_mentioned_tool_wins():
    read = {"type": "function", "function": {"name": "read_file", "parameters": {}}}
    messages = [{"role": "user", "content": "read_file then get_weather"}]
    assert find_tool_call(messages, [WEATHER, read])["function"]["name"] == "read_file"
    bare = {"name": "bare_tool"}  # a tool without the type/function wrapper
    assert find_tool_call([{"role": "user", "content": "bare_tool"}], [bare]) is not None


def test_system_reminders_do_not_choose_the_tool():
    # Claude Code puts context that names tools in <system-reminder> spans of the user message
    # (the list of agent types, CLAUDE.md): only the user's own words pick the tool
    read = {"type": "function", "function": {"name": "read_file", "parameters": {}}}
    reminder = "<system-reminder>\nAgents may call get_weather or read_file.\n</system-reminder>"
    hello = [{"role": "user", "content": f"{reminder}\n\nHello, reply briefly."}]
    assert find_tool_call(hello, [WEATHER, read]) is None
    after = [{"role": "user", "content": f"hi\n\n{reminder}"}]
    assert find_tool_call(after, [WEATHER, read]) is None
    # a mention outside the reminder still calls, even when the reminder names another earlier
    both = [{"role": "user", "content": f"{reminder}\n\nplease use read_file, then get_weather"}]
    assert find_tool_call(both, [WEATHER, read])["function"]["name"] == "read_file"
    # a span is replaced by a space: names on either side stay whole words
    glued = [{"role": "user", "content": f"get_weather{reminder}read_file"}]
    assert find_tool_call(glued, [read, WEATHER])["function"]["name"] == "get_weather"
    # an unclosed tag is the user's text
    unclosed = [{"role": "user", "content": "<system-reminder> get_weather"}]
    assert find_tool_call(unclosed, [WEATHER])["function"]["name"] == "get_weather"
    assert plan_reply("m", hello, [WEATHER, read], None, False).tool_calls is None


def test_words_that_forbid_tools_make_no_call():
    # Claude Code's compaction request names its tools to forbid them and wants a text summary
    bash = {"type": "function", "function": {"name": "Bash", "parameters": {}}}
    for text in (
        "CRITICAL: Respond with TEXT ONLY. Do NOT use Read, Bash, Grep or any tool.",
        "don't call Bash, just summarize",
        "Never use Bash here.",
    ):
        assert find_tool_call([{"role": "user", "content": text}], [bash]) is None, text
    assert find_tool_call([{"role": "user", "content": "Use Bash to run lab"}], [bash]) is not None


def test_plan_tool_call_has_empty_content():
    reply = plan_reply(
        "m", [{"role": "user", "content": "get_weather now"}], [WEATHER], None, False
    )
    assert reply.tool_calls[0]["function"]["name"] == "get_weather"
    assert reply.content == []
    assert reply.done_reason == "stop"
    assert reply.eval_count > 0


def test_reply_after_a_tool_result_includes_the_result():
    messages = [
        {"role": "user", "content": "get_weather"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather"}}]},
        {"role": "tool", "content": "sunny 21C", "tool_name": "get_weather"},
    ]
    reply = plan_reply("m", messages, [WEATHER], None, False)
    assert reply.tool_calls is None
    assert "tool get_weather returned sunny 21C" in reply.content_text


def test_num_predict_truncates_with_length_reason():
    full = plan_reply("m", USER, [], None, False)
    cut = plan_reply("m", USER, [], {"num_predict": 3}, False)
    assert cut.done_reason == "length"
    assert cut.eval_count == 3
    assert cut.content == full.content[:3]
    assert full.done_reason == "stop"
    assert full.eval_count == len(full.content) == count_tokens(full.content_text)
    big = plan_reply("m", USER, [], {"num_predict": 1000}, False)
    assert big.content == full.content
    assert big.done_reason == "stop"
    assert plan_reply("m", USER, [], {"num_predict": -1}, False).content == full.content


def test_stop_string_cuts_the_text():
    full = plan_reply("m", USER, [], None, False).content_text
    stopped = plan_reply("m", USER, [], {"stop": ["from"]}, False)
    assert stopped.content_text == full[: full.index("from")]
    assert stopped.done_reason == "stop"
    assert cut_at_stop("abc def", ["zz", "c d", "b"]) == ("a", True)
    assert cut_at_stop("abc", ["zz"]) == ("abc", False)


def test_length_wins_when_it_comes_before_the_stop_string():
    reply = plan_reply("m", USER, [], {"num_predict": 1, "stop": "."}, False)
    assert reply.done_reason == "length"
    assert reply.content_text == "Lab"


def test_thinking_comes_first_and_counts_towards_num_predict():
    reply = plan_reply("m", USER, [], None, True)
    assert reply.thinking_text.startswith("Lab thinking")
    assert reply.content_text.startswith("Lab reply")
    assert reply.eval_count == len(reply.thinking) + len(reply.content)
    limited = plan_reply("m", USER, [], {"num_predict": 2}, True)
    assert limited.content == []
    assert len(limited.thinking) == 2
    assert limited.done_reason == "length"


def test_format_json_and_schema_make_json_content():
    import json

    as_json = plan_reply("m", USER, [], None, False, "json").content_text
    assert json.loads(as_json)["reply"].startswith("Lab reply")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert json.loads(plan_reply("m", USER, [], None, False, schema).content_text) == {"n": 1}


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ("x", "options must be a JSON object"),
        ({"num_predict": "5"}, "num_predict"),
        ({"num_predict": True}, "num_predict"),
        ({"stop": 3}, "stop"),
        ({"stop": ["a", 1]}, "stop"),
        ({"temperature": "hot"}, "temperature"),
    ],
)
def test_bad_options_are_request_errors(options, fragment):
    with pytest.raises(RequestError, match=fragment):
        plan_reply("m", USER, [], options, False)


def test_other_options_are_accepted_and_do_not_change_the_text():
    plain = plan_reply("m", USER, [], None, False).content_text
    tuned = plan_reply(
        "m",
        USER,
        [],
        {"temperature": 0, "top_p": 0.9, "top_k": 40, "seed": 7, "num_ctx": 8192},
        False,
    )
    assert tuned.content_text == plain
