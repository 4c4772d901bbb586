"""Fault parsing/merging and settings from the environment."""

import pytest

from vastllm_lab.ollama.config import (
    FOREVER,
    ConfigError,
    format_duration,
    parse_duration,
    parse_host,
    settings_from_env,
)
from vastllm_lab.ollama.faults import FaultError, merge, parse_env, validate


def test_env_faults_key_values_with_lists():
    faults = parse_env("unknown_model=foo:1b,Bar,chunk_delay=0.01,busy=true,crash_after_chunks=3")
    assert faults == {
        "unknown_model": ["foo:1b", "bar:latest"],
        "chunk_delay": 0.01,
        "busy": True,
        "crash_after_chunks": 3,
    }
    assert parse_env("") == {}
    assert parse_env('{"disk_full": true, "chat_error": "boom"}') == {
        "disk_full": True,
        "chat_error": "boom",
    }


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("nonsense", "expected key=value"),
        ("flood=1", "unknown fault 'flood'"),
        ("chunk_delay=-1", "chunk_delay"),
        ("chunk_delay=soon", "chunk_delay"),
        ("busy=maybe", "busy"),
        ("crash_after_chunks=1.5", "crash_after_chunks"),
        ("unknown_model=bad name", "unknown_model"),
        ("{bad json", "not valid JSON"),
    ],
)
def test_bad_env_faults_name_the_fault(text, fragment):
    with pytest.raises(FaultError, match=fragment):
        parse_env(text)


def test_merge_sets_and_removes():
    current = merge({}, validate({"busy": True, "chunk_delay": 0.5, "chat_error": "x"}))
    current = merge(current, validate({"busy": False, "chunk_delay": None, "load_delay": 1}))
    assert current == {"chat_error": "x", "load_delay": 1.0}
    with pytest.raises(FaultError, match="JSON object"):
        validate(["busy"])
    with pytest.raises(FaultError, match="chat_error"):
        validate({"chat_error": ""})
    with pytest.raises(FaultError, match="crash_after_chunks"):
        validate({"crash_after_chunks": True})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ("127.0.0.1", 11434)),
        ("0.0.0.0", ("0.0.0.0", 11434)),
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":9000", ("127.0.0.1", 9000)),
        ("http://example.test:1234/", ("example.test", 1234)),
        ("https://h", ("h", 11434)),
        ("[::1]:5000", ("::1", 5000)),
        ("::1", ("::1", 11434)),
    ],
)
def test_parse_host(value, expected):
    assert parse_host(value) == expected


@pytest.mark.parametrize("value", ["h:port", "h:70000", "[::1", "[::1]x"])
def test_bad_hosts(value):
    with pytest.raises(ConfigError, match="OLLAMA_HOST"):
        parse_host(value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("0", 0.0),
        ("30", 30.0),
        (0, 0.0),
        (90, 90.0),
        (-1, FOREVER),
        ("-1", FOREVER),
        ("-5m", FOREVER),
    ],
)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "5 minutes", "m", "1x", True, None, [1]])
def test_bad_durations(value):
    with pytest.raises(ConfigError, match="invalid duration"):
        parse_duration(value)


def test_format_duration():
    assert format_duration(300) == "5m0s"
    assert format_duration(5400) == "1h30m0s"
    assert format_duration(2) == "2s"


def test_settings_defaults_and_overrides(tmp_path):
    defaults = settings_from_env({"HOME": str(tmp_path)})
    assert (defaults.host, defaults.port) == ("127.0.0.1", 11434)
    assert defaults.models_dir == str(tmp_path / ".ollama" / "models")
    assert defaults.keep_alive == 300.0
    assert defaults.faults == {}
    custom = settings_from_env(
        {
            "OLLAMA_HOST": ":1234",
            "OLLAMA_MODELS": str(tmp_path / "m"),
            "OLLAMA_KEEP_ALIVE": "24h",
            "OLLAMA_CONTEXT_LENGTH": "65536",
            "OLLAMA_NUM_PARALLEL": "2",
            "OLLAMA_FLASH_ATTENTION": "1",
            "OLLAMA_KV_CACHE_TYPE": "q8_0",
            "VASTLLM_LAB_PRELOAD": "qwen3:0.6b, llama3.1:8b",
            "VASTLLM_LAB_FAULTS": "busy=1",
            "VASTLLM_LAB_PULL_RATE": "1e6",
            "VASTLLM_LAB_VERSION": "9.9.9",
        }
    )
    assert custom.port == 1234
    assert custom.keep_alive == 86400.0
    assert custom.preload == ("qwen3:0.6b", "llama3.1:8b")
    assert custom.faults == {"busy": True}
    assert custom.pull_rate == 1e6
    assert custom.version == "9.9.9"
    line = custom.server_config()
    for part in (
        "OLLAMA_CONTEXT_LENGTH:65536",
        "OLLAMA_FLASH_ATTENTION:true",
        "OLLAMA_KEEP_ALIVE:24h0m0s",
        "OLLAMA_KV_CACHE_TYPE:q8_0",
        "OLLAMA_NUM_PARALLEL:2",
    ):
        assert part in line


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"OLLAMA_KEEP_ALIVE": "forever"}, "OLLAMA_KEEP_ALIVE"),
        ({"OLLAMA_CONTEXT_LENGTH": "-5"}, "OLLAMA_CONTEXT_LENGTH"),
        ({"OLLAMA_NUM_PARALLEL": "two"}, "OLLAMA_NUM_PARALLEL"),
        ({"VASTLLM_LAB_PULL_RATE": "0"}, "VASTLLM_LAB_PULL_RATE"),
        ({"VASTLLM_LAB_PULL_RATE": "fast"}, "VASTLLM_LAB_PULL_RATE"),
        ({"VASTLLM_LAB_FAULTS": "busy"}, "VASTLLM_LAB_FAULTS"),
    ],
)
def test_bad_settings_name_the_variable(env, name):
    with pytest.raises(ConfigError, match=name):
        settings_from_env(env)
