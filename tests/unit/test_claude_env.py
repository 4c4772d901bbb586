"""The Claude Code environment for the connect step: names, values, quoting, a 0600 file."""

from __future__ import annotations

import stat
import subprocess

import pytest

from vastllm.claude_env import (
    OUTPUT_RESERVE,
    claude_code_env,
    compact_pct,
    compact_threshold,
    render_env_file,
    shell_quote,
    window_warning,
    write_env_file,
)


def test_every_tier_points_at_the_served_model_and_window():
    env = claude_code_env("http://127.0.0.1:8000/", "key", "qwen3-coder:30b", 131072)
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8000"
    assert env["ANTHROPIC_AUTH_TOKEN"] == "key"
    for name in (
        "ANTHROPIC_DEFAULT_OPUS_MODEL",
        "ANTHROPIC_DEFAULT_SONNET_MODEL",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL",
        "CLAUDE_CODE_SUBAGENT_MODEL",
    ):
        assert env[name] == "qwen3-coder:30b"
    assert env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == "131072"
    assert env["CLAUDE_CODE_ATTRIBUTION_HEADER"] == "0"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert "CLAUDE_AUTOCOMPACT_PCT_OVERRIDE" not in env


def test_small_model_for_haiku_and_a_window_under_claude_codes_floor():
    env = claude_code_env("https://h", "k", "big", 65536, small_model="small")
    assert env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == "small"
    assert env["ANTHROPIC_DEFAULT_SONNET_MODEL"] == "big"
    # Claude Code plans for at least 100k and takes the percentage of 100k - 20k = 80k:
    # 56 % of 80,000 = 44,800, which leaves its 20,000-token output reserve of the 65,536
    assert env["CLAUDE_AUTOCOMPACT_PCT_OVERRIDE"] == "56"
    assert compact_threshold(65536) == 44800


@pytest.mark.parametrize("window", [32768, 40960, 49152, 65536, 81920, 87199, 87200, 98304, 99999])
def test_under_the_floor_claude_code_compacts_leaving_its_output_reserve(window):
    threshold = compact_threshold(window)
    assert window - threshold >= OUTPUT_RESERVE
    # the largest whole percentage that does: one more point would eat into the reserve
    # (or, from 87,200 up, Claude Code's own cap of 80,000 - 13,000 = 67,000 applies)
    pct = compact_pct(window)
    assert pct is not None
    assert window - 80000 * (pct + 1) // 100 < OUTPUT_RESERVE or threshold == 67000


def test_thresholds_from_the_floor_up_are_claude_codes_own():
    # window - 20,000 output reserve - 13,000 buffer, the model's 200,000 context at most
    assert compact_pct(100000) is None
    assert compact_threshold(100000) == 67000
    assert compact_threshold(131072) == 98072
    assert compact_threshold(262144) == 167000
    # continuous at the floor, and never more than the window (a tiny window: the 1 % minimum)
    assert compact_threshold(99999) == compact_threshold(100000)
    assert compact_pct(16384) == 1
    assert compact_threshold(16384) == 800


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("127.0.0.1:8000", "k", "m", 10), "http"),
        (("http://h", "k", "", 10), "model"),
        (("http://h", "k", "m", 0), "window"),
        (("http://h", "k", "m", True), "window"),
    ],
)
def test_bad_arguments_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        claude_code_env(*args)


@pytest.mark.parametrize(
    "value",
    ["plain", "", "it's", "$HOME `id` $(id) \\n", 'a"b', "new\nline", "ünïcode ✓", "''"],
)
def test_quoting_survives_a_real_shell(tmp_path, value):
    path = write_env_file(tmp_path / "env.sh", {"X": value})
    out = subprocess.run(
        ["sh", "-c", '. "$1" && printf %s "$X"', "sh", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == value


def test_rendered_file_and_names():
    text = render_env_file({"A": "1", "B": "x y"})
    assert text.splitlines()[1:] == ["export A='1'", "export B='x y'"]
    assert shell_quote("it's") == "'it'\\''s'"
    with pytest.raises(ValueError, match="variable name"):
        render_env_file({"BAD-NAME": "1"})
    with pytest.raises(ValueError, match="NUL"):
        render_env_file({"A": "a\0b"})


def test_the_file_is_0600_even_when_it_existed(tmp_path):
    path = tmp_path / "claude.env"
    path.write_text("old and much longer content than the new one " * 10)
    path.chmod(0o644)
    env = claude_code_env("http://127.0.0.1:8000", "secret", "qwen3-coder:30b", 65536)
    write_env_file(path, env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "old and much" not in text
    assert "export ANTHROPIC_AUTH_TOKEN='secret'" in text


def test_a_window_too_small_for_claude_code_gets_a_warning():
    assert window_warning(65536) is None  # compacts at 44,800
    assert window_warning(131072) is None
    warning = window_warning(32768)  # would compact at 12,000: before every request
    assert warning is not None
    assert "32768" in warning
    assert "12000" in warning
    assert "65536" in warning
