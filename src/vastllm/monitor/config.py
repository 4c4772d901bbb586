"""Settings of the monitor: defaults < JSON config file < ``VASTLLM_MONITOR_*`` variables.

Every setting is a key of the JSON file and an environment variable of the same name in upper
case with the prefix (``interval`` <-> ``VASTLLM_MONITOR_INTERVAL``). The file is found at
``--config``, else ``VASTLLM_MONITOR_CONFIG``, else ``/etc/vastllm/monitor.json`` when it exists.
``load_config`` is pure apart from reading that file: it takes the environment as a mapping.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "VASTLLM_MONITOR_"
DEFAULT_CONFIG_FILE = "/etc/vastllm/monitor.json"
COMPONENTS = ("ollama", "redis", "proxy")


class ConfigError(Exception):
    """A setting is wrong; the message names it and is fit to show a user."""


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    # where the records and the state file live
    state_dir: str = "/var/lib/vastllm/monitor"
    # seconds between rounds
    interval: float = 15.0
    # seconds each health check (HTTP, Redis PING) may take
    check_timeout: float = 5.0
    ollama_url: str = "http://127.0.0.1:11434"
    # "" = no Redis check (the proxy runs without a cache)
    redis_url: str = "redis://127.0.0.1:6379/0"
    # "" = no proxy check (and no idle stop: requests cannot be counted)
    proxy_url: str = "http://127.0.0.1:8000"
    # the proxy's key, sent to /metrics; a missing file means "no key"
    proxy_api_key_file: str = "/etc/vastllm/proxy-api-key"
    # model of the generation probe; "" = the model the proxy's /health names
    model: str = ""
    # seconds between generation probes while they succeed (a failed probe is retried every
    # round); 0 = no generation probe
    probe_interval: float = 300.0
    probe_timeout: float = 120.0
    probe_prompt: str = "Reply with OK."
    # consecutive unhealthy rounds before a component is restarted
    failure_threshold: int = 3
    # seconds after a restart of a component before it may be restarted again
    restart_cooldown: float = 300.0
    # restarts of one component within the last hour beyond which the monitor stops trying
    restart_max_per_hour: int = 4
    restart_timeout: float = 120.0
    # argv of the command that restarts each component; empty = never restarted
    restart_ollama: tuple[str, ...] = ()
    restart_redis: tuple[str, ...] = ()
    restart_proxy: tuple[str, ...] = ()
    # disks to record besides the state dir (paths that do not exist are left out)
    disk_paths: tuple[str, ...] = ("/workspace",)
    # rotation: the current file grows to max_bytes, then becomes .1; max_files rotated files kept
    max_bytes: int = 5 * 1024 * 1024
    max_files: int = 5
    # idle auto-stop: minutes without a proxy request before the instance is stopped; 0 = off
    idle_stop_minutes: float = 60.0
    # proxy routes (vastllm_requests_total{route=...}) that count as a request
    idle_routes: tuple[str, ...] = ("messages", "count_tokens")
    vastai_url: str = "https://console.vast.ai"
    # where CONTAINER_ID / CONTAINER_API_KEY are read (PID 1's environment)
    pid1_environ: str = "/proc/1/environ"
    # seconds between two stop requests while the instance keeps running
    stop_retry: float = 600.0
    # the nvidia-smi program ("" = no GPU figures)
    nvidia_smi: str = "nvidia-smi"
    # where this configuration came from (not a setting)
    source: str = field(default="defaults", compare=False)

    def restart_command(self, component: str) -> tuple[str, ...]:
        command: tuple[str, ...] = getattr(self, f"restart_{component}")
        return command

    def public(self) -> dict[str, Any]:
        """The settings as JSON-able data (no secrets live in the configuration)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _number(minimum: float, *, allow_zero: bool = False) -> Callable[[Any], float]:
    def parse(raw: Any) -> float:
        if isinstance(raw, bool):
            raise ValueError(f"must be a number, got {raw!r}")
        try:
            value = float(raw.strip() if isinstance(raw, str) else raw)
        except (TypeError, ValueError):
            raise ValueError(f"must be a number, got {raw!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"must be a finite number, got {raw!r}")
        if not (value >= minimum or (allow_zero and value == 0)):
            lowest = "0" if allow_zero else f"{minimum:g}"
            raise ValueError(f"must be >= {lowest}, got {raw!r}")
        return value

    return parse


def _integer(minimum: int) -> Callable[[Any], int]:
    def parse(raw: Any) -> int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(f"must be an integer, got {raw!r}")
        try:
            value = int(raw.strip() if isinstance(raw, str) else raw)
        except (TypeError, ValueError):
            raise ValueError(f"must be an integer, got {raw!r}") from None
        if value < minimum:
            raise ValueError(f"must be >= {minimum}, got {raw!r}")
        return value

    return parse


def _text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"must be a string, got {raw!r}")
    return raw.strip()


def _url(*, optional: bool) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = _text(raw).rstrip("/")
        if not value and optional:
            return ""
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value

    return parse


def _redis_url(raw: Any) -> str:
    value = _text(raw)
    if value and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL, or empty")
    return value


def _argv(raw: Any) -> tuple[str, ...]:
    """A command: a JSON/YAML list of arguments, or a string split like a shell would (no shell)."""
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                raw = json.loads(text)
            except ValueError:
                raise ValueError(f"is not a valid JSON list: {text!r}") from None
        else:
            try:
                return tuple(shlex.split(text))
            except ValueError as exc:
                raise ValueError(f"cannot be split into arguments: {exc}") from None
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ValueError(f"must be a list of strings or a command line, got {raw!r}")
    return tuple(raw)


def _paths(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            return _paths(_argv(text))
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw):
        return tuple(item for item in raw if item)
    raise ValueError(f"must be a list of paths or a comma-separated string, got {raw!r}")


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "state_dir": _text,
    "interval": _number(0.05),
    "check_timeout": _number(0.05),
    "ollama_url": _url(optional=False),
    "redis_url": _redis_url,
    "proxy_url": _url(optional=True),
    "proxy_api_key_file": _text,
    "model": _text,
    "probe_interval": _number(1.0, allow_zero=True),
    "probe_timeout": _number(0.1),
    "probe_prompt": _text,
    "failure_threshold": _integer(1),
    "restart_cooldown": _number(0.0),
    "restart_max_per_hour": _integer(1),
    "restart_timeout": _number(0.1),
    "restart_ollama": _argv,
    "restart_redis": _argv,
    "restart_proxy": _argv,
    "disk_paths": _paths,
    "max_bytes": _integer(4096),
    "max_files": _integer(1),
    "idle_stop_minutes": _number(0.0),
    "idle_routes": _paths,
    "vastai_url": _url(optional=False),
    "pid1_environ": _text,
    "stop_retry": _number(1.0),
    "nvidia_smi": _text,
}


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def settings_help() -> list[tuple[str, str]]:
    """(variable, default) for every setting, in order (for --help and the docs)."""
    defaults = MonitorConfig()
    rows = []
    for name in _PARSERS:
        value = _jsonable(getattr(defaults, name))
        shown = " ".join(shlex.quote(v) for v in value) if isinstance(value, list) else str(value)
        rows.append((env_name(name), shown or '""'))
    return rows


def read_config_file(path: str) -> dict[str, Any]:
    """The JSON object in ``path``; ConfigError when it cannot be read or is not an object."""
    try:
        with open(path, encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = json.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"config file {path!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a JSON object")
    if stat.S_IMODE(mode) & 0o077:
        data.setdefault("_warnings", []).append(
            f"config file {path} is readable by others (mode {stat.S_IMODE(mode):04o}); "
            "it should be 0600"
        )
    return data


def load_config(
    env: Mapping[str, str] | None = None, config_file: str | None = None
) -> tuple[MonitorConfig, list[str]]:
    """Build the configuration; return it with warnings (fit to log). Raise ConfigError."""
    environ = os.environ if env is None else env
    path = config_file or environ.get(env_name("config")) or ""
    if not path and Path(DEFAULT_CONFIG_FILE).is_file() and env is None:
        path = DEFAULT_CONFIG_FILE
    values: dict[str, Any] = {}
    warnings: list[str] = []
    if path:
        data = read_config_file(path)
        warnings += data.pop("_warnings", [])
        for key, raw in data.items():
            if key not in _PARSERS:
                raise ConfigError(
                    f"config file {path!r}: unknown setting {key!r} "
                    f"(known: {', '.join(sorted(_PARSERS))})"
                )
            try:
                values[key] = _PARSERS[key](raw)
            except ValueError as exc:
                raise ConfigError(f"config file {path!r}: {key} {exc}") from None
    for key, parse in _PARSERS.items():
        raw_env = environ.get(env_name(key))
        if raw_env is None:
            continue
        try:
            values[key] = parse(raw_env)
        except ValueError as exc:
            raise ConfigError(f"{env_name(key)} {exc}") from None
    unknown = sorted(
        k
        for k in environ
        if k.startswith(ENV_PREFIX)
        and k != env_name("config")
        and k[len(ENV_PREFIX) :].lower() not in _PARSERS
    )
    warnings += [f"unknown variable {name} is ignored" for name in unknown]
    if not values.get("state_dir", "x"):
        raise ConfigError(f"{env_name('state_dir')} must not be empty")
    config = MonitorConfig(**values, source=path or "environment")
    return config, warnings
