"""Settings of the monitor: defaults, the JSON file, VASTLLM_MONITOR_* variables."""

from __future__ import annotations

import json

import pytest

from vastllm.monitor.config import ConfigError, MonitorConfig, load_config, settings_help


def test_defaults():
    config, warnings = load_config({})
    assert warnings == []
    assert config.interval == 15.0
    assert config.probe_interval == 300.0
    assert config.failure_threshold == 3
    assert config.restart_cooldown == 300.0
    assert config.idle_stop_minutes == 60.0
    assert config.state_dir == "/var/lib/vastllm/monitor"
    assert config.vastai_url == "https://console.vast.ai"
    assert config.pid1_environ == "/proc/1/environ"
    assert config.restart_command("ollama") == ()
    assert config.idle_routes == ("messages", "count_tokens")


def test_environment():
    env = {
        "VASTLLM_MONITOR_INTERVAL": "0.5",
        "VASTLLM_MONITOR_RESTART_OLLAMA": "supervisorctl -c '/etc/supervisor/supervisord.conf' "
        "restart ollama",
        "VASTLLM_MONITOR_RESTART_PROXY": '["systemctl", "restart", "vastllm-proxy"]',
        "VASTLLM_MONITOR_DISK_PATHS": "/workspace, /data",
        "VASTLLM_MONITOR_REDIS_URL": "",
        "VASTLLM_MONITOR_IDLE_STOP_MINUTES": "0",
        "VASTLLM_MONITOR_PROXY_URL": "http://127.0.0.1:8000/",
    }
    config, _ = load_config(env)
    assert config.interval == 0.5
    assert config.restart_ollama == (
        "supervisorctl",
        "-c",
        "/etc/supervisor/supervisord.conf",
        "restart",
        "ollama",
    )
    assert config.restart_proxy == ("systemctl", "restart", "vastllm-proxy")
    assert config.disk_paths == ("/workspace", "/data")
    assert config.redis_url == ""
    assert config.idle_stop_minutes == 0
    assert config.proxy_url == "http://127.0.0.1:8000"


def test_file_then_environment(tmp_path):
    path = tmp_path / "monitor.json"
    path.write_text(
        json.dumps(
            {
                "interval": 30,
                "failure_threshold": 5,
                "restart_redis": ["supervisorctl", "restart", "redis"],
                "disk_paths": ["/workspace"],
            }
        )
    )
    path.chmod(0o600)
    config, warnings = load_config({"VASTLLM_MONITOR_INTERVAL": "20"}, str(path))
    assert warnings == []
    assert config.interval == 20.0  # the variable wins
    assert config.failure_threshold == 5
    assert config.restart_redis == ("supervisorctl", "restart", "redis")
    assert config.source == str(path)
    # the file can also be named by VASTLLM_MONITOR_CONFIG
    config, _ = load_config({"VASTLLM_MONITOR_CONFIG": str(path)})
    assert config.interval == 30.0


def test_file_readable_by_others_is_a_warning(tmp_path):
    path = tmp_path / "monitor.json"
    path.write_text("{}")
    path.chmod(0o644)
    _, warnings = load_config({}, str(path))
    assert warnings == [f"config file {path} is readable by others (mode 0644); it should be 0600"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VASTLLM_MONITOR_INTERVAL": "fast"}, "VASTLLM_MONITOR_INTERVAL must be a number"),
        ({"VASTLLM_MONITOR_INTERVAL": "0"}, "VASTLLM_MONITOR_INTERVAL must be >= 0.05"),
        ({"VASTLLM_MONITOR_FAILURE_THRESHOLD": "0"}, "must be >= 1"),
        ({"VASTLLM_MONITOR_FAILURE_THRESHOLD": "2.5"}, "must be an integer"),
        ({"VASTLLM_MONITOR_OLLAMA_URL": "127.0.0.1:11434"}, "must be an http(s) URL"),
        ({"VASTLLM_MONITOR_REDIS_URL": "http://x"}, "redis://"),
        ({"VASTLLM_MONITOR_RESTART_OLLAMA": "restart 'ollama"}, "cannot be split"),
        ({"VASTLLM_MONITOR_RESTART_OLLAMA": "[1, 2]"}, "must be a list of strings"),
        ({"VASTLLM_MONITOR_IDLE_STOP_MINUTES": "-1"}, "must be >= 0"),
        ({"VASTLLM_MONITOR_PROBE_INTERVAL": "nan"}, "finite"),
        ({"VASTLLM_MONITOR_STATE_DIR": " "}, "must not be empty"),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError) as info:
        load_config(env)
    assert message in str(info.value)


def test_bad_file(tmp_path):
    path = tmp_path / "monitor.json"
    path.write_text('{"intervall": 3}')
    with pytest.raises(ConfigError, match="unknown setting 'intervall'"):
        load_config({}, str(path))
    path.write_text("[1]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        load_config({}, str(path))
    path.write_text('{"interval": true}')
    with pytest.raises(ConfigError, match="interval must be a number"):
        load_config({}, str(path))
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config({}, str(tmp_path / "missing.json"))


def test_unknown_variable_is_a_warning():
    _, warnings = load_config({"VASTLLM_MONITOR_INTERVALL": "3"})
    assert warnings == ["unknown variable VASTLLM_MONITOR_INTERVALL is ignored"]


def test_settings_help_lists_every_setting_with_its_default():
    rows = dict(settings_help())
    assert rows["VASTLLM_MONITOR_INTERVAL"] == "15.0"
    assert rows["VASTLLM_MONITOR_RESTART_OLLAMA"] == '""'
    assert rows["VASTLLM_MONITOR_IDLE_ROUTES"] == "messages count_tokens"
    public = MonitorConfig().public()
    assert {f"VASTLLM_MONITOR_{k.upper()}" for k in public if k != "source"} == set(rows)
