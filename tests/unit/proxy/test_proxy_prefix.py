"""Cacheable prompts: on a recorded Claude Code session, each turn's Ollama prompt begins with the
whole of the previous turn's (byte for byte), so Ollama reuses its KV cache for it.

The recording (tests/data/claude_code_session, made by
benchmarks/record_claude_code_session.py from the real Claude Code CLI against the proxy and
the Ollama lab double) holds every request Claude Code sent: session "a", 6 turns, the third a
tool-use turn (two requests), then a fresh session "b" in the same project, 2 turns.

The prefix is checked twice: on the JSON the proxy sends (the system message and the tools come
first and are identical, the messages of turn k are the first messages of turn k+1, with the
same bytes), and on the prompt the lab double's chat template renders from it (what Ollama's
prompt cache compares).
"""

from __future__ import annotations

import copy
import itertools
import json
import lzma
from pathlib import Path
from typing import Any

import orjson
import pytest

from vastllm.proxy.translate_request import build_chat, parse_request
from vastllm.proxy.translate_response import ResponseAssembler, estimate_prompt_tokens
from vastllm_lab.ollama.prompt import common_prefix, render_prompt, tokenize

DATA = Path(__file__).resolve().parents[2] / "data" / "claude_code_session"
MODEL = "qwen3-coder:30b"
BILLING = "x-anthropic-billing-header:"


def _load() -> list[dict[str, Any]]:
    return json.loads(lzma.decompress((DATA / "session.json.xz").read_bytes()))


RECORDS = _load()
META = json.loads((DATA / "meta.json").read_text())
MESSAGES = [r for r in RECORDS if r["path"].startswith("/v1/messages") and "count" not in r["path"]]
PAIRS = [
    (before, after)
    for before, after in itertools.pairwise(MESSAGES)
    if before["session"] == after["session"]
]


def chat_of(body: dict[str, Any]) -> dict[str, Any]:
    return build_chat(parse_request(body), MODEL, stream=True, supports_thinking=False)


def prompt_of(chat: dict[str, Any]) -> str:
    return render_prompt(chat["messages"], chat.get("tools") or [])


def pair_id(pair: tuple[dict[str, Any], dict[str, Any]]) -> str:
    before, after = pair
    return f"{before['session']}{before['turn']}-{after['session']}{after['turn']}"


def test_the_recording_is_a_real_multi_turn_claude_code_session():
    assert META["claude_code_version"].startswith("2.")
    session_a = [r for r in MESSAGES if r["session"] == "a"]
    assert len({r["turn"] for r in session_a}) >= 6
    assert {r["session"] for r in MESSAGES} == {"a", "b"}
    # a tool-use turn: the model's tool_use went back with Claude Code's tool_result
    last = session_a[-1]["body"]["messages"]
    kinds = {
        block.get("type")
        for message in last
        if isinstance(message["content"], list)
        for block in message["content"]
    }
    assert {"tool_use", "tool_result"} <= kinds
    for record in MESSAGES:
        body = record["body"]
        assert body["stream"] is True
        assert len(body["tools"]) >= 20
        # Claude Code's per-session accounting line comes FIRST in the system prompt
        assert body["system"][0]["text"].startswith(BILLING)
    first_lines = {r["session"]: r["body"]["system"][0]["text"] for r in MESSAGES}
    assert first_lines["a"] != first_lines["b"]  # it changes from one session to the next


@pytest.mark.parametrize("pair", PAIRS, ids=[pair_id(p) for p in PAIRS])
def test_each_turn_begins_with_the_whole_previous_turn(pair):
    before, after = (chat_of(record["body"]) for record in pair)
    # the system prompt first, then the conversation
    for chat in (before, after):
        assert chat["messages"][0]["role"] == "system"
    # the JSON the proxy sends: tools and every earlier message byte-identical, in order
    assert orjson.dumps(after["tools"]) == orjson.dumps(before["tools"])
    count = len(before["messages"])
    assert len(after["messages"]) > count
    assert orjson.dumps(list(after["messages"][:count])) == orjson.dumps(list(before["messages"]))
    # the prompt the chat template renders (system, tools, messages): a byte prefix
    first, second = prompt_of(before), prompt_of(after)
    assert second.startswith(first)
    # in tokens: all but the last, "assistant\n" of the generation prompt, which can merge with
    # the whitespace that follows it (a tool call renders as "\n<tool_call>"); the last prompt
    # token is evaluated again on every request anyway
    tokens = tokenize(first)
    assert common_prefix(tokens, tokenize(second)) >= len(tokens) - 1


def test_a_fresh_session_reuses_the_system_prompt_and_the_tools():
    a1 = next(r for r in MESSAGES if r["session"] == "a")
    b1 = next(r for r in MESSAGES if r["session"] == "b")
    chat_a, chat_b = chat_of(a1["body"]), chat_of(b1["body"])
    assert chat_a["messages"][0] == chat_b["messages"][0]
    assert orjson.dumps(chat_a["tools"]) == orjson.dumps(chat_b["tools"])
    prompt_a, prompt_b = prompt_of(chat_a), prompt_of(chat_b)
    head = prompt_a[: prompt_a.index("<|im_start|>user")]
    assert prompt_b.startswith(head)
    assert len(tokenize(head)) > 0.9 * len(tokenize(prompt_b))  # 16.1k of 17.1k tokens


def test_the_billing_header_never_reaches_ollama():
    for record in MESSAGES:
        chat = chat_of(record["body"])
        assert BILLING.encode() not in orjson.dumps(chat)
        assert not chat["messages"][0]["content"].startswith("x-anthropic")


def strip_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [strip_cache_control(v) for v in value]
    return value


def test_cache_control_markers_do_not_change_the_body():
    # Claude Code moves its cache_control marker to the newest message on every turn
    moved = 0
    for record in MESSAGES:
        body = record["body"]
        stripped = strip_cache_control(body)
        moved += stripped != body
        assert orjson.dumps(chat_of(stripped)) == orjson.dumps(chat_of(body))
    assert moved == len(MESSAGES)


def test_the_translation_is_deterministic_and_keeps_the_clients_order():
    body = MESSAGES[-1]["body"]
    first = orjson.dumps(chat_of(copy.deepcopy(body)))
    assert orjson.dumps(chat_of(copy.deepcopy(body))) == first
    chat = chat_of(body)
    assert [t["function"]["name"] for t in chat["tools"]] == [t["name"] for t in body["tools"]]
    for tool, original in zip(chat["tools"], body["tools"], strict=True):
        assert list(tool["function"]["parameters"]) == list(original["input_schema"])


def test_a_mid_conversation_system_message_reaches_the_model_in_place():
    # Claude Code 2.1.197 sends the list of agent types as a system message after the first user
    # message. Ollama's qwen3-coder renderer keeps only the first system message, so it is folded
    # into that user message as <system-reminder> text: in the rendered prompt, where the model
    # sees it, and at the same place on every turn (later turns only append).
    body = MESSAGES[0]["body"]
    assert [m["role"] for m in body["messages"]] == ["user", "system"]
    agents = body["messages"][1]["content"]
    assert agents.startswith("Available agent types")
    reminder = f"<system-reminder>\n{agents}\n</system-reminder>"
    for record in MESSAGES:
        chat = chat_of(record["body"])
        assert [m["role"] for m in chat["messages"]].count("system") == 1
        assert chat["messages"][1]["role"] == "user"
        assert chat["messages"][1]["content"].startswith(reminder)  # before the user's words
        rendered = prompt_of(chat)
        assert reminder in rendered
        assert rendered.index(reminder) > rendered.index("<|im_start|>user")


def test_usage_reports_what_ollama_counted_and_no_cache_figures():
    # a follow-up turn: Ollama evaluated only the new tokens, the rest came from its cache
    chat = chat_of(MESSAGES[1]["body"])
    assembler = ResponseAssembler(
        message_id="msg_1", model="claude-sonnet-5", input_estimate=estimate_prompt_tokens(chat)
    )
    assembler.feed({"message": {"role": "assistant", "content": "ok"}, "done": False})
    assembler.feed(
        {
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 40,
            "eval_count": 1,
        }
    )
    usage = assembler.message()["usage"]
    assert set(usage) == {"input_tokens", "output_tokens"}
    assert "cache_read_input_tokens" not in orjson.dumps(assembler.message()).decode()
