"""Claude Code compacts its conversation before the served window, with the environment that
`vastllm.claude_env.claude_code_env` writes (docs/claude-code.md, "The compaction floor").

A 65,536-token window is under the 100,000 that Claude Code 2.1.197 plans for at least, so
`claude_code_env` adds CLAUDE_AUTOCOMPACT_PCT_OVERRIDE (56): Claude Code then compacts before a
request once its count reaches `compact_threshold(65536)`, 44,800 tokens. Its count is the last
answer's input + output tokens (the proxy reports the double's) plus the newer messages at 3
characters a token. The conversation is one session of `claude -p` runs (`--continue` after the
first) against the proxy and the Ollama double. Each prompt is `n` words `ab`: n tokens for the
double, and 3n - 1 characters, n tokens, for Claude Code, so both count alike. Claude Code
summarizes all but its last exchange (the last answer and the prompt after it), so the
compaction is made to come on the third prompt (on the second it would give up: nothing to
summarize).

Claude Code's Bash tool is offered: its summary request names it only to forbid it ("Do NOT
use Read, Bash, Grep, ..."), and the double, like a model, answers such a request with text (a
tool call there makes Claude Code report `compact_result: failed` and send the whole
conversation anyway). Skipped without the CLI, like test_proxy_claude_code.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from proxy_helpers import API_KEY, MODEL

from vastllm import claude_env
from vastllm_lab import testing

CLAUDE = testing.find_claude_code(required=os.environ.get("CI") == "true")
pytestmark = pytest.mark.skipif(
    CLAUDE is None,
    reason="Claude Code is not installed (scripts/setup.sh installs it into .cache/npm)",
)

WINDOW = 65536
THRESHOLD = claude_env.compact_threshold(WINDOW)
MARGIN = 1500  # how far under, then over, the threshold the conversation is taken
_ACCESS = re.compile(r"POST /v1/messages (\d{3}) .*?(?:tokens=\((\d+), \d+\))?$")


class Session:
    """One Claude Code conversation in a throw-away home and project."""

    def __init__(self, proxy_url: str, tmp_path: Path, *, override: bool) -> None:
        home, self.work = tmp_path / "home", tmp_path / "work"
        home.mkdir()
        self.work.mkdir()
        ours = claude_env.claude_code_env(proxy_url, API_KEY, MODEL, WINDOW)
        assert ours["CLAUDE_AUTOCOMPACT_PCT_OVERRIDE"] == "56"
        if not override:
            del ours["CLAUDE_AUTOCOMPACT_PCT_OVERRIDE"]
        self.env = testing.claude_code_env(proxy_url, API_KEY, home, **ours)
        self.runs = 0
        self.count = 0  # Claude Code's count after the last answer (its input + output tokens)

    def say(self, words: int) -> list[dict[str, Any]]:
        """`claude -p` with `words` words (continuing the session); its stream-json events."""
        assert CLAUDE is not None
        assert 0 < words < 40000  # one argument holds at most 128 KiB
        args = [
            "--max-turns",
            "3",
            "--tools",
            "Bash",
            "--output-format",
            "stream-json",
            "--verbose",
        ]
        if self.runs:
            args.insert(0, "--continue")
        prompt = " ".join(["ab"] * words)
        result = testing.run_claude(CLAUDE, prompt, args, env=self.env, cwd=self.work, timeout=120)
        self.runs += 1
        events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        final = [event for event in events if event.get("type") == "result"]
        assert final, result.stdout[-3000:] + result.stderr[-3000:]
        usage = final[-1]["usage"]
        self.count = usage["input_tokens"] + usage["output_tokens"]
        return events


def compactions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        event["compact_metadata"]
        for event in events
        if event.get("type") == "system" and event.get("subtype") == "compact_boundary"
    ]


def sent(proxy_log: str) -> list[tuple[int, int | None]]:
    """(status, input tokens) of every /v1/messages the proxy answered, from its access log."""
    found = []
    for line in proxy_log.splitlines():
        match = _ACCESS.search(line)
        if match:
            found.append((int(match[1]), int(match[2]) if match[2] else None))
    return found


def metrics(proxy_url: str) -> str:
    return httpx.get(f"{proxy_url}/metrics", headers={"x-api-key": API_KEY}, timeout=10).text


def test_claude_code_compacts_before_the_served_window(ollama_emulator, start_proxy, tmp_path):
    assert THRESHOLD == 44800
    assert THRESHOLD <= WINDOW - claude_env.OUTPUT_RESERVE
    emu = ollama_emulator(preload=[MODEL])
    proxy = start_proxy(emu.url, "", api_key=API_KEY, model=MODEL, context_window=WINDOW)
    chat = Session(proxy.url, tmp_path, override=True)
    assert not compactions(chat.say(20000))
    # to just under the threshold: sent whole (the double counts what Claude Code counts)
    assert not compactions(chat.say(THRESHOLD - MARGIN - chat.count))
    under = chat.count
    assert THRESHOLD - MARGIN <= under < THRESHOLD
    # just over it (the whole conversation would be ~46,300 tokens, well within the window):
    # Claude Code has the conversation before the last prompt summarized first, then answers
    # on the summary
    events = chat.say(THRESHOLD + MARGIN - chat.count)
    [compacted] = compactions(events)
    assert compacted["trigger"] == "auto"
    final = next(event for event in events if event.get("type") == "result")
    assert final["is_error"] is False
    assert chat.count < 2 * MARGIN + 3000  # system + summary + the last answer and prompt
    # what the proxy answered: the three prompts and the summary request, none near the window
    answered = sent(proxy.log())
    assert [status for status, _ in answered] == [200] * 4, proxy.log()
    sizes = [tokens for _, tokens in answered]  # seen: 20,910, 43,306, 44,252, 4,017
    summary_request = sizes[2]
    assert summary_request is not None
    assert under <= summary_request < WINDOW - claude_env.OUTPUT_RESERVE
    assert sizes[3] == final["usage"]["input_tokens"]
    assert "prompt_too_long" not in metrics(proxy.url)


def test_without_the_override_claude_code_runs_into_the_window(
    ollama_emulator, start_proxy, tmp_path
):
    """CLAUDE_CODE_AUTO_COMPACT_WINDOW alone: Claude Code plans for 100,000 tokens (threshold
    100,000 - 20,000 - 13,000 = 67,000, above the window), so it carries the conversation past
    44,800 and sends one over 65,536, which the proxy answers with `prompt is too long`.
    (Claude Code then compacts in reaction to the 400; that part is not asserted here.)"""
    emu = ollama_emulator(preload=[MODEL])
    proxy = start_proxy(emu.url, "", api_key=API_KEY, model=MODEL, context_window=WINDOW)
    chat = Session(proxy.url, tmp_path, override=False)
    chat.say(20000)
    assert not compactions(chat.say(THRESHOLD + MARGIN - chat.count))
    assert THRESHOLD < chat.count < WINDOW
    chat.say(WINDOW + 700 - chat.count)  # over the window, under 67,000
    answered = sent(proxy.log())
    assert [status for status, _ in answered[:3]] == [200, 200, 400], proxy.log()
    assert 'vastllm_upstream_errors_total{kind="prompt_too_long"} 1' in metrics(proxy.url)
