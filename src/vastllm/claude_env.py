"""The environment that fits Claude Code to a vastllm backend. Pure, except ``write_env_file``.

``claude_code_env`` returns the variables (docs/claude-code.md says what each does and where
its name was confirmed); ``render_env_file`` makes a POSIX shell file to ``source``, every value
single-quoted; ``write_env_file`` writes it with mode 0600 (it holds the proxy key).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

# Claude Code 2.1.197 raises CLAUDE_CODE_AUTO_COMPACT_WINDOW to at least this (Math.max(1e5, …)).
COMPACT_WINDOW_FLOOR = 100_000
# Below the floor, compaction is started at this many percentage points under window / floor.
_PCT_MARGIN = 5
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def claude_code_env(
    base_url: str,
    token: str,
    model: str,
    window: int,
    small_model: str | None = None,
) -> dict[str, str]:
    """Variables for Claude Code against the proxy at ``base_url`` (key ``token``), which serves
    ``model`` (the name Claude Code sends; the proxy maps it) with a ``window``-token context.
    ``small_model`` is used for the haiku tier (background calls), else ``model``."""
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
    if not model:
        raise ValueError("model must not be empty")
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    env = {
        "ANTHROPIC_BASE_URL": base_url.rstrip("/"),
        "ANTHROPIC_AUTH_TOKEN": token,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": model,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": small_model or model,
        "CLAUDE_CODE_SUBAGENT_MODEL": model,
        "CLAUDE_CODE_AUTO_COMPACT_WINDOW": str(window),
        # the per-session billing line first in the system prompt: without it, every session
        # shares the cached system prompt and tools (the proxy drops the line anyway)
        "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
        # no auto-updater, telemetry, error reporting or feedback calls to Anthropic
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_BUG_COMMAND": "1",
    }
    if window < COMPACT_WINDOW_FLOOR:
        # Claude Code will not plan for less than 100,000 tokens: compact at a percentage of
        # that floor which stays under the served window.
        pct = max(window * 100 // COMPACT_WINDOW_FLOOR - _PCT_MARGIN, 1)
        env["CLAUDE_AUTOCOMPACT_PCT_OVERRIDE"] = str(pct)
    return env


def shell_quote(value: str) -> str:
    """POSIX single quotes: nothing inside is expanded; a ``'`` becomes ``'\\''``."""
    return "'" + value.replace("'", "'\\''") + "'"


def render_env_file(env: Mapping[str, str]) -> str:
    """``export NAME='value'`` lines, in the mapping's order, for ``. file`` in sh/bash/zsh."""
    lines = ["# Claude Code on a vastllm backend (docs/claude-code.md). Use: . ./this-file"]
    for name, value in env.items():
        if not _NAME.match(name):
            raise ValueError(f"not a shell variable name: {name!r}")
        if "\0" in value:
            raise ValueError(f"{name}: a value cannot hold a NUL byte")
        lines.append(f"export {name}={shell_quote(value)}")
    return "\n".join(lines) + "\n"


def write_env_file(path: str | Path, env: Mapping[str, str]) -> Path:
    """Write ``render_env_file(env)`` to ``path`` with mode 0600 (created so, never readable by
    others even for a moment; an existing file is truncated and set to 0600)."""
    target = Path(path)
    text = render_env_file(env)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return target
