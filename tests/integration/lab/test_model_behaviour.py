"""The Ollama double's real-model behaviours over HTTP: tool-call leaks, num_ctx, prompt cache."""

import json
import time

import httpx
import pytest

from vastllm_lab.ollama.generation import leak_text
from vastllm_lab.ollama.prompt import exceeds_error, prompt_tokens

CODER = "qwen3-coder:30b"
HTTP = httpx.Client(timeout=20)
BASH = {
    "type": "function",
    "function": {
        "name": "Bash",
        "description": "Run a shell command",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string"}, "description": {"type": "string"}},
            "required": ["command"],
        },
    },
}
READ = {
    "type": "function",
    "function": {
        "name": "Read",
        "parameters": {
            "type": "object",
            "properties": {"file_path": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["file_path", "limit"],
        },
    },
}
ASK = [{"role": "user", "content": "list the files with Bash please"}]
CALL = {"function": {"name": "Bash", "arguments": {"command": "lab"}}}


@pytest.fixture(scope="module", autouse=True)
def _close_client():
    yield
    HTTP.close()


def lines(response):
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def chat(url, **body):
    return HTTP.post(url + "/api/chat", json={"model": CODER, **body})


@pytest.fixture
def emu(ollama_emulator):
    return ollama_emulator(preload=[CODER])


# --- tool-call leaks --------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["xml", "xml_wrapped", "json"])
def test_tool_call_leak_streams_the_call_as_content_in_small_chunks(emu, form):
    emu.set_faults({"tool_call_leak": form})
    chunks = lines(chat(emu.url, messages=ASK, tools=[BASH, READ]))
    parts = [c["message"]["content"] for c in chunks[:-1]]
    assert all("tool_calls" not in c["message"] for c in chunks)
    assert "".join(parts) == leak_text(CALL, form)
    assert len(parts) > 10
    assert max(len(p) for p in parts) <= 9
    opening = "{" if form == "json" else "<"
    assert parts[0] == opening  # the first chunk alone says nothing yet
    final = chunks[-1]
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["eval_count"] == len(parts)

    whole = chat(emu.url, messages=ASK, tools=[BASH, READ], stream=False).json()
    assert whole["message"] == {"role": "assistant", "content": leak_text(CALL, form)}

    turn = [
        *ASK,
        {"role": "assistant", "content": whole["message"]["content"]},
        {"role": "tool", "content": "README.md", "tool_name": "Bash"},
    ]
    answer = chat(emu.url, messages=turn, tools=[BASH, READ], stream=False).json()
    assert "tool Bash returned README.md" in answer["message"]["content"]
    assert "tool_calls" not in answer["message"]


def test_leak_arguments_fit_the_schema_and_switch_off_at_run_time(emu):
    emu.set_faults({"tool_call_leak": "json"})
    ask = [{"role": "user", "content": "Read the notes"}]
    whole = chat(emu.url, messages=ask, tools=[BASH, READ], stream=False).json()
    assert json.loads(whole["message"]["content"]) == {
        "name": "Read",
        "arguments": {"file_path": "lab", "limit": 1},
    }
    assert emu.set_faults({"tool_call_leak": None}) == {}
    proper = chat(emu.url, messages=ask, tools=[BASH, READ], stream=False).json()
    assert proper["message"]["content"] == ""
    assert proper["message"]["tool_calls"][0]["function"]["name"] == "Read"
    bad = HTTP.post(emu.url + "/lab/faults", json={"tool_call_leak": "yaml"})
    assert bad.status_code == 400
    assert "tool_call_leak" in bad.json()["error"]


def test_leak_set_at_start(ollama_emulator):
    emu = ollama_emulator(preload=[CODER], faults={"tool_call_leak": "xml"})
    assert emu.get_faults() == {"tool_call_leak": "xml"}
    whole = chat(emu.url, messages=ASK, tools=[BASH], stream=False).json()
    assert whole["message"]["content"].startswith("<function=Bash>\n<parameter=command>\n")
    plain = chat(emu.url, messages=[{"role": "user", "content": "hello"}], tools=[BASH]).text
    assert "<function=" not in plain  # no tool named: plain text


# --- num_ctx ----------------------------------------------------------------------------------


def long_messages(words):
    return [{"role": "user", "content": " ".join(["word"] * words)}]


def test_truncate_false_answers_400_stream_or_not(emu):
    messages = long_messages(300)
    count = len(prompt_tokens(messages, []))
    for stream in (True, False):
        answer = chat(
            emu.url, messages=messages, options={"num_ctx": 256}, truncate=False, stream=stream
        )
        assert answer.status_code == 400
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json() == {"error": exceeds_error(count, 256)}
        inner = json.loads(answer.json()["error"])["error"]
        assert inner["type"] == "exceed_context_size_error"
        assert (inner["n_prompt_tokens"], inner["n_ctx"]) == (count, 256)
    fits = chat(emu.url, messages=messages, options={"num_ctx": 400}, truncate=False, stream=False)
    assert fits.status_code == 200
    assert fits.json()["prompt_eval_count"] == count


def test_shift_false_answers_ollamas_prompt_too_long_error(emu):
    answer = chat(emu.url, messages=long_messages(300), options={"num_ctx": 256}, shift=False)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith(
        "the prompt is longer than the context length currently available to the model"
    )


def test_default_truncation_silently_keeps_the_tail(emu):
    answer = chat(emu.url, messages=long_messages(300), options={"num_ctx": 256}, stream=False)
    assert answer.status_code == 200
    assert answer.json()["prompt_eval_count"] == 256 - (256 - 5) // 2
    assert "truncating input prompt" in emu.log()


def test_the_server_default_context_length_applies(ollama_emulator):
    emu = ollama_emulator(preload=[CODER], env={"OLLAMA_CONTEXT_LENGTH": "128"})
    answer = chat(emu.url, messages=long_messages(200), truncate=False)
    assert answer.status_code == 400
    assert '"n_ctx":128' in answer.json()["error"]
    generate = HTTP.post(
        emu.url + "/api/generate",
        json={"model": CODER, "prompt": " ".join(["w"] * 200), "truncate": False},
    )
    assert generate.status_code == 400
    assert "exceed_context_size_error" in generate.json()["error"]


def test_truncate_and_shift_must_be_booleans(emu):
    answer = chat(emu.url, messages=ASK, truncate="no")
    assert answer.status_code == 400
    assert answer.json() == {"error": "truncate must be true or false"}


# --- prompt cache and timing --------------------------------------------------------------------


def slots(emu):
    return HTTP.get(emu.url + "/lab/stats").json()["slots"]


def test_follow_up_turns_evaluate_only_the_new_tokens(emu):
    emu.set_faults({"prompt_cache_count": True})
    system = {"role": "system", "content": " ".join(["rule"] * 200)}
    first = [system, {"role": "user", "content": "hello there"}]
    one = chat(emu.url, messages=first, tools=[BASH], stream=False).json()
    full = len(prompt_tokens(first, [BASH]))
    assert one["prompt_eval_count"] == full
    second = [*first, one["message"], {"role": "user", "content": "and one more question"}]
    two = lines(chat(emu.url, messages=second, tools=[BASH]))[-1]
    new_tokens = len(prompt_tokens(second, [BASH])) - full - (one["eval_count"])
    assert two["prompt_eval_count"] == new_tokens
    assert two["prompt_eval_count"] < 20
    again = chat(emu.url, messages=second, tools=[BASH], stream=False).json()
    assert again["prompt_eval_count"] == 1  # all cached: the last token is evaluated again
    stats = slots(emu)[CODER]
    assert emu.slots() == {CODER: stats}
    assert len(stats) == 1  # OLLAMA_NUM_PARALLEL default 1
    assert stats[0]["requests"] == 3
    assert stats[0]["hits"] == 2
    assert stats[0]["reused_tokens"] == (full + one["eval_count"]) + (
        len(prompt_tokens(second, [BASH])) - 1
    )
    emu.set_faults({"prompt_cache_count": None})
    plain = chat(emu.url, messages=second, tools=[BASH], stream=False).json()
    assert plain["prompt_eval_count"] == len(prompt_tokens(second, [BASH]))  # the default


def test_changing_an_early_byte_evaluates_everything_again(emu):
    emu.set_faults({"prompt_cache_count": True})
    messages = [{"role": "system", "content": "today is monday " * 50}, *ASK]
    chat(emu.url, messages=messages, stream=False)
    changed = [{"role": "system", "content": "today is tuesday " * 50}, *ASK]
    answer = chat(emu.url, messages=changed, stream=False).json()
    # only "<|im_start|>", "system\n", "today ", "is " are reused
    assert answer["prompt_eval_count"] == len(prompt_tokens(changed, [])) - 4


def test_two_sessions_share_one_slot_or_keep_two(ollama_emulator):
    for parallel in (1, 2):
        emu = ollama_emulator(
            preload=[CODER],
            env={"OLLAMA_NUM_PARALLEL": str(parallel)},
            faults={"prompt_cache_count": True},
        )
        a = [{"role": "user", "content": "alpha " * 40}]
        b = [{"role": "user", "content": "bravo " * 40}]
        firsts = [chat(emu.url, messages=m, stream=False).json() for m in (a, b)]
        emu.reset_stats()
        evaluated = []
        for messages, first in zip((a, b), firsts, strict=True):
            follow = [*messages, first["message"], *ASK]
            answer = chat(emu.url, messages=follow, stream=False).json()
            evaluated.append(answer["prompt_eval_count"])
            if parallel == 2:  # only the reply's end and the new question are evaluated
                assert (
                    answer["prompt_eval_count"]
                    == len(prompt_tokens(follow, []))
                    - len(prompt_tokens(messages, []))
                    - first["eval_count"]
                )
        stats = slots(emu)[CODER]
        assert len(stats) == parallel
        reused = sum(s["reused_tokens"] for s in stats)
        if parallel == 1:  # each session evicted the other: only "<|im_start|>user\n" is shared
            assert reused == 2 + 2
            assert min(evaluated) > 40
        else:
            assert reused > 2 * 40
            assert max(evaluated) < 20


def test_rates_charge_time_for_the_evaluated_tokens(emu):
    emu.set_faults({"prompt_tokens_per_second": 1000, "generation_tokens_per_second": 200})
    messages = long_messages(400)
    started = time.monotonic()
    first = chat(emu.url, messages=messages, options={"num_ctx": 4096}, stream=False).json()
    first_wall = time.monotonic() - started
    evaluated = first["prompt_eval_count"]
    assert first["prompt_eval_duration"] == int(evaluated / 1000 * 1e9)
    assert first["eval_duration"] >= first["eval_count"] / 200 * 1e9 * 0.9
    assert first["total_duration"] >= first["prompt_eval_duration"] + first["eval_duration"]
    assert first_wall >= evaluated / 1000
    # the same prompt again: one token is evaluated, however prompt_eval_count is reported
    started = time.monotonic()
    stream = lines(chat(emu.url, messages=messages, options={"num_ctx": 4096}))
    first_chunk_wall = time.monotonic() - started  # upper bound for time to first token
    assert stream[-1]["prompt_eval_duration"] == int(1 / 1000 * 1e9)
    assert first_chunk_wall < first_wall
