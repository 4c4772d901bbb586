"""The context window: sent as num_ctx with truncate/shift off, a prompt over it refused with
Anthropic's `prompt is too long: N tokens > M maximum` (streamed or not), count_tokens agreeing,
and the window checked against what Ollama says the model takes. Against the Ollama double
(which enforces num_ctx the way Ollama does), through the official anthropic SDK."""

from __future__ import annotations

import re

import anthropic
import httpx
import pytest
from proxy_helpers import API_KEY, MODEL, assert_anthropic_error

WINDOW = 2048
LONG = "Summarize this. " + "lorem " * 3000  # ~3000 tokens for the double
TOO_LONG = re.compile(r"^prompt is too long: (\d+) tokens > (\d+) maximum$")


@pytest.fixture
def small_window(ollama_emulator, start_proxy):
    emu = ollama_emulator(preload=[MODEL])
    proxy = start_proxy(emu.url, "", api_key=API_KEY, model=MODEL, context_window=WINDOW)
    with anthropic.Anthropic(base_url=proxy.url, api_key=API_KEY, max_retries=0) as sdk:
        yield sdk, proxy, emu


def request(content: str, **extra):
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


def test_a_prompt_over_the_window_is_refused_like_anthropic_does(small_window):
    sdk, proxy, emu = small_window
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.create(**request(LONG))
    error = refused.value.body["error"]
    assert error["type"] == "invalid_request_error"
    found = TOO_LONG.match(error["message"])
    assert found, error["message"]
    tokens, maximum = int(found.group(1)), int(found.group(2))
    assert maximum == WINDOW
    assert tokens > WINDOW

    # streamed: the same 400, before any stream byte
    with (
        pytest.raises(anthropic.BadRequestError) as streamed,
        sdk.messages.stream(**request(LONG)) as stream,
    ):
        list(stream)
    assert streamed.value.body["error"]["message"] == error["message"]
    raw = httpx.post(
        proxy.url + "/v1/messages",
        json={**request(LONG), "stream": True},
        headers={"x-api-key": API_KEY},
    )
    body = assert_anthropic_error(raw, 400, "invalid_request_error")
    assert raw.headers["content-type"].startswith("application/json")
    assert body["error"]["message"] == error["message"]

    # count_tokens counts the same prompt the same way: N > M, and messages refuses it
    counted = sdk.messages.count_tokens(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": LONG}]
    )
    assert counted.input_tokens == tokens

    # Ollama was asked not to cut: no "truncating input prompt" in its log
    assert "truncating input prompt" not in emu.log()


def test_a_prompt_that_fits_is_answered_with_the_window_sent(small_window):
    sdk, proxy, emu = small_window
    fits = "Explain this. " + "lorem " * 1500
    counted = sdk.messages.count_tokens(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": fits}]
    )
    assert counted.input_tokens <= WINDOW
    message = sdk.messages.create(**request(fits))
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == counted.input_tokens
    with sdk.messages.stream(**request(fits + " again")) as stream:
        assert stream.get_final_message().stop_reason == "end_turn"
    # Ollama runs the model with the proxy's window (num_ctx), not its own default (4096)
    ps = httpx.get(emu.url + "/api/ps").json()["models"]
    assert [m["context_length"] for m in ps] == [WINDOW]
    health = httpx.get(proxy.url + "/health").json()["context_window"]
    assert health == {
        "served": WINDOW,
        "configured": WINDOW,
        "model_max": 262144,
        "loaded": WINDOW,
        "warnings": [],
    }


def test_a_window_over_the_models_is_capped_and_reported(ollama_emulator, start_proxy):
    emu = ollama_emulator(preload=["qwen2.5-coder:1.5b"])  # takes 32768 tokens
    proxy = start_proxy(
        emu.url, "", api_key=API_KEY, model="qwen2.5-coder:1.5b", context_window=100000
    )
    health = httpx.get(proxy.url + "/health").json()
    window = health["context_window"]
    assert window["served"] == 32768
    assert window["configured"] == 100000
    assert window["model_max"] == 32768
    assert "more than the model takes (32768)" in window["warnings"][0]
    assert health["status"] == "ok"  # a warning, not a failure
    assert "VASTLLM_CONTEXT_WINDOW=100000 is more than model 'qwen2.5-coder:1.5b' takes" in (
        proxy.log()
    )
    with anthropic.Anthropic(base_url=proxy.url, api_key=API_KEY, max_retries=0) as sdk:
        sdk.messages.create(**request("hello there"))
    ps = httpx.get(emu.url + "/api/ps").json()["models"]
    assert [m["context_length"] for m in ps] == [32768]


def test_a_model_loaded_with_another_context_is_a_health_warning(ollama_emulator, start_proxy):
    emu = ollama_emulator(preload=[MODEL])
    proxy = start_proxy(emu.url, "", api_key=API_KEY, model=MODEL, context_window=WINDOW)
    # someone else loads the model with Ollama's default context (4096 in the double)
    httpx.post(emu.url + "/api/generate", json={"model": MODEL}, timeout=10)
    window = httpx.get(proxy.url + "/health").json()["context_window"]
    assert window["loaded"] == 4096
    assert window["served"] == WINDOW
    assert "loaded with a 4096-token context" in window["warnings"][0]
