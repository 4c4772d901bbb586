"""Tool calls the model writes as text (the Ollama double's `tool_call_leak`), turned back into
`tool_use` by the proxy: each form, streamed and not, through the official anthropic SDK."""

from __future__ import annotations

import anthropic
import httpx
import pytest
from proxy_helpers import API_KEY, MODEL, WEATHER_TOOL

BASH_TOOL = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {
        "type": "object",
        "properties": {"command": {"type": "string"}, "timeout": {"type": "integer"}},
        "required": ["command"],
    },
}


def rescued(url: str) -> dict[str, int]:
    text = httpx.get(url + "/metrics", headers={"x-api-key": API_KEY}).text
    counts = {}
    for line in text.splitlines():
        if line.startswith("vastllm_tool_calls_rescued_total{"):
            form = line.split('form="', 1)[1].split('"', 1)[0]
            counts[form] = int(line.rsplit(" ", 1)[1])
    return counts


@pytest.fixture
def leaky(ollama_emulator, start_proxy):
    """start(form) -> (sdk client, proxy): the double leaks its tool calls in that form."""
    clients = []

    def start(form: str):
        emu = ollama_emulator(preload=[MODEL], faults={"tool_call_leak": form})
        proxy = start_proxy(emu.url, "", api_key=API_KEY, model=MODEL)
        sdk = anthropic.Anthropic(base_url=proxy.url, api_key=API_KEY, max_retries=0)
        clients.append(sdk)
        return sdk, proxy, emu

    yield start
    for sdk in clients:
        sdk.close()


@pytest.mark.parametrize("form", ["xml", "xml_wrapped", "json"])
def test_a_leaked_tool_call_comes_back_as_tool_use(leaky, form):
    sdk, proxy, _emu = leaky(form)
    request = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 300,
        "tools": [WEATHER_TOOL, BASH_TOOL],
        "messages": [{"role": "user", "content": "Please run Bash to list the files"}],
    }
    assert rescued(proxy.url)[form] == 0

    message = sdk.messages.create(**request)
    assert message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["tool_use"]
    call = message.content[0]
    assert call.name == "Bash"
    assert call.input == {"command": "lab"}
    assert call.id.startswith("toolu_")

    with sdk.messages.stream(**request) as stream:
        events = list(stream)
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "tool_use"
    assert [block.type for block in streamed.content] == ["tool_use"]
    assert streamed.content[0].name == "Bash"
    assert streamed.content[0].input == {"command": "lab"}
    # nothing of the markup reached the client as text
    assert not [
        e for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
    ]

    assert rescued(proxy.url)[form] == 2

    # the tool result goes back; the model's final text arrives as text
    final = sdk.messages.create(
        **{
            **request,
            "messages": [
                *request["messages"],
                {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": call.id, "content": "a.txt"}
                    ],
                },
            ],
        }
    )
    assert final.stop_reason == "end_turn"
    assert "tool Bash returned a.txt" in final.content[0].text


def test_without_tools_or_with_the_leak_off_text_stays_text(leaky):
    sdk, proxy, emu = leaky("xml")
    # no tool named: the double answers plain text, which streams as text
    message = sdk.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=200,
        tools=[BASH_TOOL],
        messages=[{"role": "user", "content": "Say hello"}],
    )
    assert message.stop_reason == "end_turn"
    assert message.content[0].text.startswith("Lab reply from")
    emu.set_faults({"tool_call_leak": None})
    message = sdk.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=200,
        tools=[BASH_TOOL],
        messages=[{"role": "user", "content": "Please run Bash"}],
    )
    assert message.stop_reason == "tool_use"  # Ollama's own tool_calls: no rescue needed
    assert rescued(proxy.url) == {"xml": 0, "xml_wrapped": 0, "json": 0}
