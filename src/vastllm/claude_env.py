"""The environment that fits Claude Code to a vastllm backend. Pure, except ``write_env_file``.

``claude_code_env`` returns the variables (docs/claude-code.md says what each does and where
its name was confirmed); ``render_env_file`` makes a POSIX shell file to ``source``, every value
single-quoted; ``write_env_file`` writes it with mode 0600 (it holds the proxy key).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

# When Claude Code 2.1.197 compacts (read in its binary, measured end to end by
# tests/integration/proxy/test_proxy_claude_code_compact.py; docs/claude-code.md):
#   window    = min(model context, max(COMPACT_WINDOW_FLOOR, CLAUDE_CODE_AUTO_COMPACT_WINDOW))
#   effective = window - min(max output tokens, OUTPUT_RESERVE)
#   threshold = min(floor(effective * CLAUDE_AUTOCOMPACT_PCT_OVERRIDE / 100), effective - BUFFER)
# before a request whose count (the last answer's input + output tokens, plus the newer messages
# at 3 characters a token) reaches the threshold. For a model name it does not know the context
# is MODEL_CONTEXT and the max output 32,000. Only with CLAUDE_CODE_AUTO_COMPACT_WINDOW set: without
# it, Claude Code compacts only after a "prompt is too long".
COMPACT_WINDOW_FLOOR = 100_000
OUTPUT_RESERVE = 20_000
BUFFER = 13_000
MODEL_CONTEXT = 200_000
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
    pct = compact_pct(window)
    if pct is not None:
        env["CLAUDE_AUTOCOMPACT_PCT_OVERRIDE"] = str(pct)
    return env


def compact_pct(window: int) -> int | None:
    """``CLAUDE_AUTOCOMPACT_PCT_OVERRIDE`` for a served ``window`` (None from 100,000 up).

    Claude Code plans for at least 100,000 tokens and applies the percentage to that minus its
    output reserve (80,000): the largest whole percentage whose threshold leaves
    ``OUTPUT_RESERVE`` tokens of the window free, the room Claude Code keeps for an answer (or a
    compaction's summary) at any window. 65,536 -> 56 (compaction at 44,800 tokens).
    """
    if window >= COMPACT_WINDOW_FLOOR:
        return None
    effective = COMPACT_WINDOW_FLOOR - OUTPUT_RESERVE
    return max((window - OUTPUT_RESERVE) * 100 // effective, 1)


def compact_threshold(window: int) -> int:
    """The count at which Claude Code 2.1.197 compacts under ``claude_code_env(..., window)``
    when the model name is one it does not know (the comment on ``COMPACT_WINDOW_FLOOR``)."""
    effective = min(MODEL_CONTEXT, max(COMPACT_WINDOW_FLOOR, window)) - OUTPUT_RESERVE
    threshold = effective - BUFFER
    pct = compact_pct(window)
    if pct is not None:
        threshold = min(math.floor(effective * (pct / 100)), threshold)  # as Claude Code does
    return threshold


# Claude Code's own system prompt and tools (~17,000 tokens) plus CLAUDE.md and a first prompt.
CLAUDE_CODE_BASE_TOKENS = 20_000


def window_warning(window: int) -> str | None:
    """A warning when ``window`` is too small for Claude Code (None otherwise): it would
    compact at about the size of its own system prompt and tools, i.e. before every request."""
    threshold = compact_threshold(window)
    if threshold >= CLAUDE_CODE_BASE_TOKENS * 5 // 4:
        return None
    return (
        f"the served context window ({window} tokens) is small for Claude Code: it would compact "
        f"at {threshold} tokens, about what its own system prompt and tools take "
        f"(~{CLAUDE_CODE_BASE_TOKENS}); serve at least 65536 (ollama_context_length)"
    )


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
