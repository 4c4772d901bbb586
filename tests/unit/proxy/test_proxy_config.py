"""Settings from flags and VASTLLM_* variables; refusals to start."""

from __future__ import annotations

import pytest

from vastllm.proxy.__main__ import main, startup_line
from vastllm.proxy.config import ConfigError, load_settings, redact_url, resolve_model


def test_defaults():
    s = load_settings([], {})
    assert (s.host, s.port, s.ollama_url) == ("127.0.0.1", 8000, "http://127.0.0.1:11434")
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.cache_enabled
    assert s.api_key is None
    assert s.read_timeout == 1800.0
    assert s.alias_rules == (("claude-*", "qwen3-coder:30b"),)


def test_env_and_flags_flag_wins():
    env = {
        "VASTLLM_PORT": "9000",
        "VASTLLM_OLLAMA_URL": "http://10.0.0.2:11434/",
        "VASTLLM_MODEL": "qwen2.5-coder:7b",
        "VASTLLM_OPEN_METRICS": "yes",
        "VASTLLM_LOG_FORMAT": "JSON",
        "VASTLLM_CACHE_TTL": "60",
    }
    s = load_settings(["--port", "9100"], env)
    assert s.port == 9100
    assert s.ollama_url == "http://10.0.0.2:11434"
    assert s.model == "qwen2.5-coder:7b"
    assert s.open_metrics is True
    assert s.log_format == "json"
    assert s.cache_ttl == 60


def test_empty_redis_url_disables_cache():
    assert not load_settings(["--redis-url", ""], {}).cache_enabled


def test_model_map_checked_before_default_rule():
    s = load_settings(
        [],
        {
            "VASTLLM_MODEL_MAP": '{"claude-*haiku*": "qwen2.5-coder:1.5b"}',
            "VASTLLM_MODEL": "qwen3-coder:30b",
        },
    )
    assert resolve_model("claude-3-5-haiku-20241022", s.alias_rules) == "qwen2.5-coder:1.5b"
    assert resolve_model("claude-sonnet-4-5", s.alias_rules) == "qwen3-coder:30b"
    assert resolve_model("gpt-4o", s.alias_rules) is None


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"VASTLLM_MODEL_MAP": "{not json"}, "VASTLLM_MODEL_MAP"),
        ({"VASTLLM_MODEL_MAP": '["a"]'}, "VASTLLM_MODEL_MAP: must be a JSON object"),
        ({"VASTLLM_MODEL_MAP": '{"a": 3}'}, "VASTLLM_MODEL_MAP: entry 'a'"),
        ({"VASTLLM_PORT": "http"}, "VASTLLM_PORT: must be an integer"),
        ({"VASTLLM_PORT": "70000"}, "VASTLLM_PORT"),
        ({"VASTLLM_OLLAMA_URL": "localhost:11434"}, "VASTLLM_OLLAMA_URL"),
        ({"VASTLLM_REDIS_URL": "http://x"}, "VASTLLM_REDIS_URL"),
        ({"VASTLLM_CACHE_TTL": "0"}, "VASTLLM_CACHE_TTL"),
        ({"VASTLLM_READ_TIMEOUT": "-1"}, "VASTLLM_READ_TIMEOUT"),
        ({"VASTLLM_LOG_FORMAT": "xml"}, "VASTLLM_LOG_FORMAT"),
        ({"VASTLLM_OPEN_METRICS": "perhaps"}, "VASTLLM_OPEN_METRICS"),
    ],
)
def test_bad_values_name_the_setting(env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_settings([], env)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "example.org"])
def test_refuses_non_loopback_without_key(host):
    with pytest.raises(ConfigError, match="refusing to listen on non-loopback"):
        load_settings(["--host", host], {})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.5.0.1", "::1", "localhost"])
def test_loopback_without_key_is_fine(host):
    assert load_settings(["--host", host], {}).host == host


def test_key_file_is_read_and_stripped(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    s = load_settings(["--host", "0.0.0.0"], {"VASTLLM_API_KEY_FILE": str(key_file)})
    assert s.api_key == "s3cret"
    assert "s3cret" not in repr(s)


def test_unreadable_or_empty_key_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read key file"):
        load_settings([], {"VASTLLM_API_KEY_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_settings([], {"VASTLLM_API_KEY_FILE": str(tmp_path / "empty")})


def test_key_and_key_file_together_is_ambiguous(tmp_path):
    (tmp_path / "k").write_text("a")
    with pytest.raises(ConfigError, match="only one of"):
        load_settings([], {"VASTLLM_API_KEY": "b", "VASTLLM_API_KEY_FILE": str(tmp_path / "k")})


def test_main_exits_2_with_one_clear_line(capsys, monkeypatch):
    monkeypatch.delenv("VASTLLM_API_KEY", raising=False)
    monkeypatch.delenv("VASTLLM_API_KEY_FILE", raising=False)
    assert main(["--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vastllm-proxy: error: refusing to listen")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_startup_line_never_contains_secrets():
    s = load_settings(
        [],
        {"VASTLLM_API_KEY": "topsecret", "VASTLLM_REDIS_URL": "redis://:hunter2@127.0.0.1:6379/0"},
    )
    line = startup_line(s)
    assert "topsecret" not in line
    assert "hunter2" not in line
    assert "http://127.0.0.1:8000" in line
    assert "cache on" in line
    assert "auth required" in line
    assert "cache off" in startup_line(load_settings(["--redis-url", ""], {}))


def test_redact_url():
    assert redact_url("redis://u:p@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
