"""Claude Code itself (`claude -p`) through the proxy, against the Ollama double with
`tool_call_leak` on: the model writes its tool call as text, the proxy turns it into `tool_use`,
Claude Code runs the tool (Bash: a `lab` command the test puts on PATH), sends the result back
and prints the model's final text. And the answer to a prompt over the context window.

The double calls the tool the user's own words in the last user message name (not the
`<system-reminder>` context Claude Code adds there, which names tools like Agent); `--tools Bash`
offers Claude Code's Bash tool only, a small prompt for the window test. Skipped without the CLI,
like test_proxy_claude_code.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from proxy_helpers import API_KEY, MODEL

from vastllm_lab import testing

CLAUDE = testing.find_claude_code(required=os.environ.get("CI") == "true")
pytestmark = pytest.mark.skipif(
    CLAUDE is None,
    reason="Claude Code is not installed (scripts/setup.sh installs it into .cache/npm)",
)


def run_claude(proxy_url: str, tmp_path, prompt: str) -> tuple[subprocess.CompletedProcess, list]:
    assert CLAUDE is not None
    home, work, bindir = tmp_path / "home", tmp_path / "work", tmp_path / "bin"
    for folder in (home, work, bindir):
        folder.mkdir(exist_ok=True)
    # the command the double's call runs: `lab` (its string argument value)
    lab = bindir / "lab"
    lab.write_text(f"#!/bin/sh\necho ran > {tmp_path}/lab-ran\necho LAB-TOOL-OUTPUT\n")
    lab.chmod(0o755)
    env = testing.claude_code_env(
        proxy_url, API_KEY, home, path=f"{bindir}:/usr/local/bin:/usr/bin:/bin"
    )
    args = ["--max-turns", "3", "--tools", "Bash", "--allowedTools", "Bash"]
    args += ["--output-format", "stream-json", "--verbose"]
    result = testing.run_claude(CLAUDE, prompt, args, env=env, cwd=work)
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result, events


@pytest.mark.parametrize("form", ["xml", "xml_wrapped", "json"])
def test_claude_code_runs_a_tool_call_the_model_wrote_as_text(
    ollama_emulator, start_proxy, tmp_path, form
):
    emu = ollama_emulator(preload=[MODEL], faults={"tool_call_leak": form})
    proxy = start_proxy(emu.url, "", api_key=API_KEY, model=MODEL)
    result, events = run_claude(proxy.url, tmp_path, "Use the Bash tool to run the lab command")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert (tmp_path / "lab-ran").exists()  # the tool ran
    calls = [
        block
        for event in events
        if event.get("type") == "assistant"
        for block in event["message"]["content"]
        if block["type"] == "tool_use"
    ]
    assert [(c["name"], c["input"]) for c in calls] == [("Bash", {"command": "lab"})]
    final = next(event for event in events if event.get("type") == "result")
    # its result went back, and the model's final text arrived
    assert "tool Bash returned LAB-TOOL-OUTPUT" in final["result"]
    assert "<function" not in result.stdout
    assert '"arguments"' not in final["result"]


def test_claude_code_on_a_prompt_over_the_window(ollama_emulator, start_proxy, tmp_path):
    """Claude Code's own prompt (~1,300 tokens with Bash only) over a 1,000-token window: it
    reads the 400 as Anthropic's, cannot compact a one-message conversation, says so, exits 1."""
    emu = ollama_emulator(preload=[MODEL])
    proxy = start_proxy(emu.url, "", api_key=API_KEY, model=MODEL, context_window=1000)
    result, events = run_claude(proxy.url, tmp_path, "Say hello")
    assert result.returncode == 1
    final = next(event for event in events if event.get("type") == "result")
    assert final["is_error"] is True
    assert final["api_error_status"] == 400
    assert final["terminal_reason"] == "prompt_too_long"
    assert final["result"].startswith("Prompt is too long")
    assert "(limit 1000)" in final["result"]
