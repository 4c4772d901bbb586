"""Secrets: from the environment or a 0600 file, never a flag; never in the start-up line or
an error message."""

from __future__ import annotations

import pytest

from vastllm.proxy.__main__ import main, startup_line
from vastllm.proxy.config import (
    ConfigError,
    load_settings,
    redact_url,
    secrets_of,
    url_has_secret,
)


@pytest.mark.parametrize(
    ("argv", "variable"),
    [
        (["--api-key", "sk-0123456789"], "VASTLLM_API_KEY"),
        (["--redis-url", "redis://:hunter2@127.0.0.1:6379/0"], "VASTLLM_REDIS_URL"),
        (["--redis-url", "redis://127.0.0.1:6379/0?password=hunter2"], "VASTLLM_REDIS_URL"),
        (["--redis-url", "unix:///run/redis.sock?db=1&password=hunter2"], "VASTLLM_REDIS_URL"),
        (["--ollama-url", "https://user:hunter2@ollama.example:443"], "VASTLLM_OLLAMA_URL"),
    ],
)
def test_secret_flags_are_refused_naming_the_variable(argv, variable, capsys):
    with pytest.raises(ConfigError, match=f"refusing .* on the command line.*set {variable}"):
        load_settings(argv, {})
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err
    assert "sk-0123456789" not in err
    assert err.count("\n") == 1


def test_flags_without_secrets_are_fine():
    s = load_settings(
        ["--redis-url", "redis://127.0.0.1:6380/2", "--ollama-url", "http://10.0.0.2:11434"], {}
    )
    assert s.redis_url == "redis://127.0.0.1:6380/2"
    assert load_settings(["--redis-url", ""], {}).cache_enabled is False


def test_secrets_from_the_environment_are_fine():
    env = {
        "VASTLLM_API_KEY": "sk-0123456789",
        "VASTLLM_REDIS_URL": "redis://127.0.0.1:6379/0?password=hunter2",
    }
    s = load_settings([], env)
    assert s.api_key == "sk-0123456789"
    assert set(secrets_of(s)) == {"sk-0123456789", "hunter2"}


@pytest.mark.parametrize(
    "redis_url",
    [
        "redis://:hunter2@127.0.0.1:6379/0",
        "redis://default:hunter2@127.0.0.1:6379/0",
        "redis://127.0.0.1:6379/0?password=hunter2",
        "rediss://127.0.0.1:6379/0?db=0&password=hunter2",
        "unix:///run/redis.sock?db=1&password=hunter2",
    ],
)
def test_startup_line_never_shows_a_redis_password(redis_url):
    s = load_settings(
        [],
        {
            "VASTLLM_REDIS_URL": redis_url,
            "VASTLLM_OLLAMA_URL": "https://ollama-user:hunter2@ollama.example",
            "VASTLLM_API_KEY": "sk-0123456789",
        },
    )
    line = startup_line(s)
    assert "hunter2" not in line
    assert "sk-0123456789" not in line
    assert "***" in line


def test_a_bad_scheme_ollama_url_error_does_not_repeat_the_password():
    with pytest.raises(ConfigError) as info:
        load_settings([], {"VASTLLM_OLLAMA_URL": "ftp://admin:hunter2@ollama.example/"})
    assert "hunter2" not in str(info.value)
    assert "VASTLLM_OLLAMA_URL" in str(info.value)
    assert "admin:***@ollama.example" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings([], {"VASTLLM_OLLAMA_URL": "http://[::1:hunter2@x"})
    assert "hunter2" not in str(info.value)


def test_redact_url_forms():
    assert redact_url("redis://u:p@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("redis://h:1/0?password=p&db=2") == "redis://h:1/0?password=***&db=2"
    assert redact_url("https://token@h/") == "https://***@h/"
    assert redact_url("http://u:p@[::1]:8080") == "http://u:***@[::1]:8080"
    assert redact_url("http://h:11434") == "http://h:11434"
    assert "p" not in redact_url("http://[bad:u:p@x").replace("unparsable", "")


def test_url_has_secret():
    assert url_has_secret("redis://:p@h/0")
    assert url_has_secret("redis://h/0?password=p")
    assert url_has_secret("https://token@h")
    assert not url_has_secret("redis://h:6379/0")
    assert not url_has_secret("")


def test_a_key_file_others_can_read_is_warned_about(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("sk-0123456789\n")
    key_file.chmod(0o644)
    s = load_settings([], {"VASTLLM_API_KEY_FILE": str(key_file)})
    assert s.api_key == "sk-0123456789"
    assert len(s.warnings) == 1
    assert "chmod 600" in s.warnings[0]
    assert "sk-0123456789" not in s.warnings[0]
    key_file.chmod(0o600)
    assert load_settings([], {"VASTLLM_API_KEY_FILE": str(key_file)}).warnings == ()
