"""The lab double's prompt model (pure): template, tokens, num_ctx, slots, tool-call leaks."""

import hashlib
import io
import json
import lzma
import random
from pathlib import Path

import pytest

from vastllm_lab.ollama import faults
from vastllm_lab.ollama.catalog import builtin_catalog
from vastllm_lab.ollama.config import Settings
from vastllm_lab.ollama.generation import (
    _digest,
    leak_chunks,
    leak_text,
    plan_reply,
    reply_text,
    thinking_text,
)
from vastllm_lab.ollama.prompt import (
    SHIFT_OFF_ERROR,
    Slot,
    choose_slot,
    common_prefix,
    exceeds_error,
    fit_context,
    prompt_tokens,
    render_prompt,
    render_segments,
    tokenize,
    tools_text,
)
from vastllm_lab.ollama.state import LabOllama
from vastllm_lab.ollama.store import ModelStore

BASH = {
    "type": "function",
    "function": {
        "name": "Bash",
        "description": "Run a command",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string"}, "timeout": {"type": "integer"}},
            "required": ["command", "timeout"],
        },
    },
}
CALL = {"function": {"name": "Bash", "arguments": {"command": "lab", "timeout": 1}}}


# --- template and tokens --------------------------------------------------------------------


def test_render_prompt_puts_system_and_tools_first():
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "be brief"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": "ok", "tool_name": "Bash"},
    ]
    tools = [{"function": {"name": "T", "parameters": {"b": 1, "a": 2}}, "type": "function"}]
    assert render_prompt(messages, tools) == (
        "<|im_start|>system\nbe brief\n\n# Tools\n\nYou have access to the following functions:"
        '\n\n<tools>\n{"function": {"name": "T", "parameters": {"a": 2, "b": 1}}, '
        '"type": "function"}\n</tools><|im_end|>\n'
        "<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n\n<tool_call>\n<function=Bash>\n<parameter=command>\nlab\n"
        "</parameter>\n<parameter=timeout>\n1\n</parameter>\n</function>\n</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nok\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_only_the_first_system_message_is_the_system_prompt():
    # Ollama's qwen3-coder renderer: "filter out system messages and choose the first (if any)
    # to win"; the others are dropped from the prompt
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "Available agent types: ..."},
    ]
    assert render_prompt(messages, []) == (
        "<|im_start|>system\nbe brief<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # wherever it stands; an empty system message does not win
    later = [{"role": "system", "content": ""}, {"role": "user", "content": "hi"}, messages[2]]
    assert render_prompt(later, []).startswith(
        "<|im_start|>system\nAvailable agent types: ...<|im_end|>\n<|im_start|>user\nhi"
    )
    assert len(plan_reply("m", messages, [], None, False).content) > 0
    assert plan_reply("m", messages, [], None, False).prompt_eval_count == len(
        prompt_tokens(messages[:2], [])
    )


def test_truncation_keeps_the_first_system_message_as_the_system_prompt():
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": words(30)},
        {"role": "system", "content": words(30)},
        {"role": "user", "content": "last one"},
    ]
    fit = fit_context(messages, [], 20)
    assert fit.error is None
    assert fit.dropped_messages == 1
    assert fit.tokens == prompt_tokens([messages[0], messages[3]], [])


def test_render_prompt_is_byte_stable_across_json_key_order():
    one = [{"type": "function", "function": {"name": "T", "parameters": {"x": 1, "y": 2}}}]
    two = [{"function": {"parameters": {"y": 2, "x": 1}, "name": "T"}, "type": "function"}]
    messages = [{"role": "user", "content": "hi"}]
    assert render_prompt(messages, one) == render_prompt(messages, two)
    assert render_prompt(messages, []) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_tokenize_is_a_partition_with_markers_as_tokens():
    text = "<|im_start|>user\nwrite a  sort<|im_end|>\n<x> \n"
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert tokens == [
        "<|im_start|>",
        "user\n",
        "write ",
        "a  ",
        "sort",
        "<|im_end|>\n",
        "<",
        "x> \n",
    ]
    assert tokenize("") == []
    assert tokenize("  lead") == ["  ", "lead"]


SESSION = Path(__file__).resolve().parents[2] / "data" / "claude_code_session" / "session.json.xz"


def recorded_chats():
    """The Ollama chat bodies of the recorded Claude Code session (via the proxy's translation)."""
    from vastllm.proxy.translate_request import build_chat, parse_request

    records = json.loads(lzma.decompress(SESSION.read_bytes()))
    return [
        build_chat(
            parse_request(r["body"]), "qwen3-coder:30b", stream=True, supports_thinking=False
        )
        for r in records
        if r["path"].startswith("/v1/messages") and "count" not in r["path"]
    ]


AWKWARD = [
    "",
    " ",
    "\n\n",
    "<",
    "< ",
    "text <",
    "<|im",
    "<|im_end|",
    "<|im_end|>",
    "<|im_start|>user\n",
    "ends with spaces   ",
    "  starts with spaces",
    "a<b>c",
    "<tool_call>\n<function=x>",
    "tab\t",
    "é ü ✓",
]


def test_no_token_spans_two_segments():
    # the memoized tokenization relies on it: tokenizing segment by segment is tokenizing the
    # whole (every segment but the last ends in "<|im_end|>\n", each begins with "<|im_start|>")
    rng = random.Random(7)
    cases = [(chat["messages"], chat["tools"]) for chat in recorded_chats()]
    for _ in range(300):
        roles = ["system", "user", "assistant", "tool"]
        messages = [
            {
                "role": rng.choice(roles),
                "content": "".join(rng.choices(AWKWARD, k=rng.randint(0, 4))),
            }
            for _ in range(rng.randint(0, 5))
        ]
        cases.append((messages, rng.choice([[], [BASH]])))
    for messages, tools in cases:
        segments = render_segments(messages, tools)
        whole = "".join(segments)
        assert whole == render_prompt(messages, tools)
        for segment in segments[:-1]:
            assert segment.startswith("<|im_start|>")
            assert segment.endswith("<|im_end|>\n")
        piecewise = [token for segment in segments for token in tokenize(segment)]
        assert piecewise == tokenize(whole)
        # the memoized count, twice (a miss, then a hit), is the same as from scratch
        assert prompt_tokens(messages, tools) == tokenize(whole)
        assert prompt_tokens(messages, tools) == tokenize(whole)


def test_memoized_tool_schemas_are_type_exact():
    # 1, 1.0 and True are == in Python but not the same JSON: the memo must not mix them up
    def tool(value):
        return [{"type": "function", "function": {"name": "T", "parameters": {"default": value}}}]

    messages = [{"role": "user", "content": "hi"}]
    texts = []
    for value in (1, True, 1.0, 1, "1", [1], {"a": 1}, {"a": True}):
        text = tools_text(tool(value))
        expected = json.dumps(
            tool(value)[0], sort_keys=True, ensure_ascii=False, separators=(", ", ": ")
        )
        assert text == expected
        assert render_prompt(messages, tool(value)).count(expected) == 1
        texts.append(text)
    assert len(set(texts)) == 7
    # a tools list marshal cannot take is rendered directly
    odd = [{"type": "function", "function": {"name": "T", "parameters": {"x": range(2)}}}]
    with pytest.raises(TypeError):
        tools_text(odd)


def test_the_reply_seed_is_the_hash_of_the_whole_conversation():
    # the tools' JSON is memoized and hashed piece by piece: the same seed as hashing all of it
    for chat in recorded_chats()[:3]:
        messages, tools = list(chat["messages"]), list(chat["tools"])
        for _ in range(2):
            blob = json.dumps(
                ["m", messages, tools], sort_keys=True, separators=(",", ":"), default=str
            )
            seed = hashlib.sha256(blob.encode("utf-8")).digest()
            count = 6 + seed[0] % 8
            assert len(reply_text("m", messages, tools).split(": ", 1)[1].split()) == count
            assert _digest("m", messages, tools=tools) == seed
            thinking = json.dumps(
                ["thinking", "m", messages, tools], sort_keys=True, separators=(",", ":")
            )
            assert (
                _digest("thinking", "m", messages, tools=tools)
                == hashlib.sha256(thinking.encode("utf-8")).digest()
            )
        assert thinking_text("m", messages, tools) == thinking_text("m", messages, list(tools))


def test_a_follow_up_turn_begins_with_the_previous_prompt_and_reply():
    first = [{"role": "user", "content": "list files"}]
    reply = "Lab reply: alpha bravo."
    second = [
        *first,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "and now?"},
    ]
    cached = prompt_tokens(first, [BASH]) + tokenize(reply)
    follow = prompt_tokens(second, [BASH])
    assert common_prefix(cached, follow) == len(cached)


# --- num_ctx ----------------------------------------------------------------------------------


def words(n):
    return " ".join(["w"] * n)


def test_a_prompt_that_fits_is_kept_whole():
    messages = [{"role": "user", "content": "a b c"}]
    fit = fit_context(messages, [], 9, truncate=False, shift=False)
    assert fit.error is None
    assert len(fit.tokens) == fit.full_count == 8


def test_truncate_false_answers_the_runners_exceed_context_size_error():
    messages = [{"role": "user", "content": words(20)}]
    fit = fit_context(messages, [], 16, truncate=False)
    assert fit.tokens == []
    assert fit.full_count == 25
    assert fit.error == exceeds_error(25, 16)
    assert json.loads(fit.error) == {
        "error": {
            "code": 400,
            "message": "request (25 tokens) exceeds the available context size (16 tokens), "
            "try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 25,
            "n_ctx": 16,
        }
    }


def test_truncation_drops_the_oldest_messages_but_keeps_system_and_the_last():
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": words(30)},
        {"role": "assistant", "content": words(30)},
        {"role": "user", "content": "last one"},
    ]
    fit = fit_context(messages, [], 20)
    assert fit.error is None
    assert fit.dropped_messages == 2
    assert not fit.shifted
    assert fit.tokens == prompt_tokens([messages[0], messages[3]], [])
    assert len(fit.tokens) == 11


def test_shift_false_refuses_what_dropping_messages_cannot_fit():
    messages = [{"role": "user", "content": words(40)}]
    fit = fit_context(messages, [], 30, shift=False)
    assert fit.error == SHIFT_OFF_ERROR
    assert fit.error.startswith(
        "the prompt is longer than the context length currently available to the model"
    )


def test_context_shift_keeps_the_head_and_the_tail():
    text = " ".join(f"t{i}" for i in range(100))
    messages = [{"role": "user", "content": text}]
    full = prompt_tokens(messages, [])
    fit = fit_context(messages, [], 41)
    assert fit.shifted
    assert fit.error is None
    assert len(fit.tokens) == 41 - (41 - 5) // 2 == 23
    assert fit.tokens[:5] == full[:5]
    assert fit.tokens[5:] == full[-18:]
    assert fit.full_count == len(full) == 105


# --- slots --------------------------------------------------------------------------------------


def test_common_prefix():
    assert common_prefix(["a", "b", "c"], ["a", "b", "x"]) == 2
    assert common_prefix([], ["a"]) == 0
    assert common_prefix(["a", "b"], ["a", "b", "c"]) == 2
    # compared a block at a time: every place of the first difference, around block edges
    base = [f"t{i}" for i in range(2000)]
    for cut in (0, 1, 511, 512, 513, 1023, 1024, 1500, 1999):
        other = [*base[:cut], "x", *base[cut + 1 :]]
        assert common_prefix(base, other) == cut
        assert common_prefix(base, base[:cut]) == cut
    assert common_prefix(base, list(base)) == 2000


def test_choose_slot_continues_the_slot_whose_cache_begins_the_prompt():
    slots = [
        Slot(["s", "x"], last_used=5),
        Slot(["s", "a", "b"], last_used=9),
        Slot([], last_used=1),
    ]
    assert choose_slot(slots, ["s", "a", "b", "c"]) == (1, 3)
    assert choose_slot(slots, ["s", "x", "y"]) == (0, 2)


def test_choose_slot_takes_the_lru_slot_and_copies_the_longest_prefix_into_it():
    slots = [
        Slot(["s", "x"], last_used=5),
        Slot(["s", "a", "b"], last_used=9),
        Slot([], last_used=1),
    ]
    assert choose_slot(slots, ["z"]) == (2, 0)  # no prefix anywhere: the LRU slot
    # diverges from slot 1 after two tokens: slot 1 is kept, the LRU slot gets the prefix
    assert choose_slot(slots, ["s", "a", "q"]) == (2, 2)
    slots[2].last_used = 10
    assert choose_slot(slots, ["s", "a", "q"]) == (0, 2)
    slots[1].busy = True
    # a busy slot is not continued, but its prefix is copied into the LRU free slot
    assert choose_slot(slots, ["s", "a", "b", "c"]) == (0, 3)


def test_choose_slot_always_evaluates_the_last_token():
    assert choose_slot([Slot(["a", "b"])], ["a", "b"]) == (0, 1)
    assert choose_slot([Slot(["a"])], ["a"]) == (0, 0)
    assert choose_slot([Slot(["a", "b", "r"])], ["a", "b"]) == (0, 1)


def test_choose_slot_with_every_slot_busy_still_answers():
    slots = [Slot(["a"], last_used=2, busy=True), Slot(["b"], last_used=1, busy=True)]
    assert choose_slot(slots, ["q"]) == (1, 0)


def test_state_slots_count_hits_and_interleaved_sessions_evict_each_other(tmp_path):
    app = LabOllama(
        Settings(models_dir=str(tmp_path), num_parallel=1),
        builtin_catalog(),
        ModelStore(str(tmp_path)),
        io.StringIO(),
    )
    one, two = ["s1", "a", "b"], ["s2", "c", "d"]
    assert app.acquire_slot("m", one) == (0, 0)
    app.release_slot("m", 0, [*one, "r"])
    assert app.acquire_slot("m", [*one, "r", "q"]) == (0, 4)
    app.release_slot("m", 0, [*one, "r", "q"])
    assert app.acquire_slot("m", two) == (0, 0)  # one slot: session two evicts session one
    app.release_slot("m", 0, two)
    assert app.stats()["slots"] == {
        "m": [
            {
                "slot": 0,
                "requests": 3,
                "hits": 1,
                "reused_tokens": 4,
                "evaluated_tokens": 3 + 1 + 3,
                "cached_tokens": 3,
                "work_ns": 0,
            }
        ]
    }
    app.add_work("m", 0, 1500)
    app.add_work("m", 0, 500)
    assert app.stats()["slots"]["m"][0]["work_ns"] == 2000
    app.reset_stats()
    assert app.stats()["slots"]["m"][0]["requests"] == 0
    assert app.stats()["slots"]["m"][0]["work_ns"] == 0
    assert app.stats()["slots"]["m"][0]["cached_tokens"] == 3
    app.unload("m")
    assert app.stats()["slots"] == {}


def test_two_slots_keep_two_sessions(tmp_path):
    app = LabOllama(
        Settings(models_dir=str(tmp_path), num_parallel=2),
        builtin_catalog(),
        ModelStore(str(tmp_path)),
        io.StringIO(),
    )
    one, two = ["s1", "a", "b"], ["s2", "c", "d"]
    for prompt in (one, two):
        index, _ = app.acquire_slot("m", prompt)
        app.release_slot("m", index, prompt)
    assert app.acquire_slot("m", [*one, "x"]) == (0, 3)
    app.release_slot("m", 0, [*one, "x"])
    assert app.acquire_slot("m", [*two, "y"]) == (1, 3)


# --- tool-call leaks --------------------------------------------------------------------------


def test_leak_text_in_each_form():
    assert leak_text(CALL, "xml") == (
        "<function=Bash>\n<parameter=command>\nlab\n</parameter>\n"
        "<parameter=timeout>\n1\n</parameter>\n</function>"
    )
    assert leak_text(CALL, "xml_wrapped") == (
        "<tool_call>\n<function=Bash>\n<parameter=command>\nlab\n</parameter>\n"
        "<parameter=timeout>\n1\n</parameter>\n</function>\n</tool_call>"
    )
    assert (
        leak_text(CALL, "json") == '{"name": "Bash", "arguments": {"command": "lab", "timeout": 1}}'
    )
    with pytest.raises(ValueError, match="unknown tool-call leak form"):
        leak_text(CALL, "yaml")


def test_leak_chunks_cut_markup_at_awkward_places():
    chunks = leak_chunks("<function=Bash>")
    assert chunks == ["<", "func", "ti", "on=Bash", ">"]
    text = leak_text(CALL, "xml_wrapped")
    pieces = leak_chunks(text)
    assert "".join(pieces) == text
    assert max(len(p) for p in pieces) <= 9
    assert not any("<tool_call>" in p or "<function=" in p for p in pieces)


@pytest.mark.parametrize("form", ["xml", "xml_wrapped", "json"])
def test_plan_reply_leaks_the_call_into_content(form):
    messages = [{"role": "user", "content": "please run Bash"}]
    reply = plan_reply("m", messages, [BASH], None, False, leak=form)
    assert reply.tool_calls is None
    assert reply.content_text == leak_text(CALL, form)
    assert len(reply.content) > 5
    assert reply.eval_count == len(reply.content)
    assert reply.done_reason == "stop"
    done = [
        *messages,
        {"role": "assistant", "content": reply.content_text},
        {"role": "tool", "content": "files", "tool_name": "Bash"},
    ]
    final = plan_reply("m", done, [BASH], None, False, leak=form)
    assert final.tool_calls is None
    assert "tool Bash returned files" in final.content_text


def test_plan_reply_without_leak_or_without_tools_is_unchanged():
    messages = [{"role": "user", "content": "please run Bash"}]
    assert plan_reply("m", messages, [BASH], None, False).tool_calls == [CALL]
    plain = plan_reply("m", messages, [], None, False, leak="xml")
    assert plain.content_text.startswith("Lab reply from m: ")


def test_leak_respects_num_predict():
    messages = [{"role": "user", "content": "please run Bash"}]
    reply = plan_reply("m", messages, [BASH], {"num_predict": 3}, False, leak="json")
    assert reply.content == ["{", '"nam', 'e"']
    assert reply.done_reason == "length"


# --- the switches -------------------------------------------------------------------------------


def test_behaviour_switches_validate():
    assert faults.validate({"tool_call_leak": "xml_wrapped"}) == {"tool_call_leak": "xml_wrapped"}
    assert faults.validate({"tool_call_leak": None}) == {"tool_call_leak": None}
    assert faults.validate(
        {"prompt_tokens_per_second": 3000, "generation_tokens_per_second": "60"}
    ) == {"prompt_tokens_per_second": 3000.0, "generation_tokens_per_second": 60.0}
    assert faults.validate({"prompt_cache_count": "on"}) == {"prompt_cache_count": True}
    for bad in (
        {"tool_call_leak": "yaml"},
        {"tool_call_leak": 1},
        {"prompt_tokens_per_second": -1},
    ):
        with pytest.raises(faults.FaultError):
            faults.validate(bad)
    assert faults.parse_env("tool_call_leak=json,generation_tokens_per_second=60") == {
        "tool_call_leak": "json",
        "generation_tokens_per_second": 60.0,
    }
