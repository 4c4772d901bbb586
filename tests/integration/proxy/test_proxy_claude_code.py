"""Claude Code itself (`claude -p`) through the proxy.

`scripts/setup.sh` installs it from npm into .cache/npm (scripts/test.sh puts it on PATH).
Without the binary the test is skipped on a developer machine, but fails in CI, where it must
run. Claude Code is kept on loopback: its non-essential traffic is disabled and any other
HTTP(S) goes to a closed local port.

Seen with Claude Code 2.1.197: a `HEAD /` first, then `POST /v1/messages?beta=true` with
`Authorization: Bearer`, `anthropic-version: 2023-06-01`,
`anthropic-beta: claude-code-20250219,...`,
`stream: true`, `max_tokens: 64000`, `thinking: {"type": "adaptive"}`, `context_management`,
`output_config: {"effort": "high"}`, `metadata.user_id` (a JSON string with device and session ids),
24 tools, three system blocks (the first an `x-anthropic-billing-header:` line) and a
`role: "system"` message inside `messages`.
"""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import pytest
from proxy_helpers import API_KEY

from vastllm_lab import testing

CLAUDE = testing.find_claude_code(required=os.environ.get("CI") == "true")
pytestmark = pytest.mark.skipif(
    CLAUDE is None,
    reason="Claude Code is not installed (scripts/setup.sh installs it into .cache/npm)",
)


def run_claude(proxy_url: str, token: str, home) -> tuple[subprocess.CompletedProcess, float]:
    assert CLAUDE is not None
    env = testing.claude_code_env(proxy_url, token, home)
    started = time.monotonic()
    result = testing.run_claude(CLAUDE, "Say hello in five words", ["--max-turns", "1"], env=env)
    return result, time.monotonic() - started


def test_claude_code_answers_through_the_proxy(shared_proxy, tmp_path):
    def served() -> int:
        metrics = httpx.get(shared_proxy.url + "/metrics", headers={"x-api-key": API_KEY}).text
        for line in metrics.splitlines():
            if line.startswith('vastllm_requests_total{route="messages",status="200"}'):
                return int(line.rsplit(" ", 1)[1])
        return 0

    before = served()
    result, _ = run_claude(shared_proxy.url, API_KEY, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # the lab double's deterministic text, relayed by the proxy
    assert "Lab reply from qwen3-coder:30b" in result.stdout
    assert served() > before


def test_claude_code_stops_at_once_on_a_wrong_key(shared_proxy, tmp_path):
    result, seconds = run_claude(shared_proxy.url, "not-the-key", tmp_path)
    assert result.returncode != 0
    assert "401" in result.stdout + result.stderr
    assert seconds < 60  # x-should-retry: false — no minutes of retries
