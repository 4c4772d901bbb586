"""Settings of the lab double from the environment (the same variables as real Ollama). Pure."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import faults as faults_mod
from ._version import VERSION

DEFAULT_PORT = 11434
DEFAULT_PULL_RATE = 16e9  # bytes/s: qwen3-coder:30b (~19 GB) "downloads" in ~1.2 s
FOREVER = -1.0  # a keep-alive that never expires

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(ValueError):
    """A setting is invalid; the message names the variable and the value."""


def parse_host(value: str) -> tuple[str, int]:
    """`OLLAMA_HOST`: `host:port`, `:port`, `host`, `http://host:port`, `[::1]:port`."""
    text = value.strip()
    for scheme in ("http://", "https://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
    text = text.rstrip("/")
    if not text:
        return "127.0.0.1", DEFAULT_PORT
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"OLLAMA_HOST: invalid address {value!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"OLLAMA_HOST: invalid address {value!r}")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:  # a bare IPv6 address
        host = text
    host = host or "127.0.0.1"
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"OLLAMA_HOST: invalid port {port_text!r} in {value!r}")
    return host, int(port_text)


def parse_duration(value: Any) -> float:
    """A keep-alive: Go duration text (`5m`, `1h30m`, `0`) or a number of seconds.

    Returns seconds; any negative value means "forever" (FOREVER).
    """
    if isinstance(value, bool):
        raise ConfigError(f"invalid duration {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ConfigError(f"invalid duration {value!r}")
        return FOREVER if value < 0 else float(value)
    if not isinstance(value, str):
        raise ConfigError(f"invalid duration {value!r}")
    text = value.strip()
    sign = 1.0
    if text and text[0] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if not text:
        raise ConfigError(f'time: invalid duration "{value}"')
    try:
        seconds = float(text)  # a bare number means seconds
    except ValueError:
        position, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * _UNIT[match.group(2)]
            position = match.end()
        if position != len(text):
            raise ConfigError(f'time: invalid duration "{value}"') from None
    seconds *= sign
    return FOREVER if seconds < 0 else seconds


def format_duration(seconds: float) -> str:
    """Go-like text for the startup line (`5m0s`, `-1`)."""
    if seconds < 0:
        return "2562047h47m16.854775807s"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{secs:g}s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _positive_int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigError(f"{key}: expected a positive integer, got {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    models_dir: str = ""
    keep_alive: float = 300.0
    context_length: int = 4096
    num_parallel: int = 1
    flash_attention: bool = False
    kv_cache_type: str = ""
    preload: tuple[str, ...] = ()
    faults: dict[str, Any] = field(default_factory=dict)
    pull_rate: float = DEFAULT_PULL_RATE
    catalog_path: str | None = None
    version: str = VERSION
    exit_with_parent: bool = False

    def server_config(self) -> str:
        """The `env="map[...]"` text of the startup line, like real Ollama's."""
        items = {
            "OLLAMA_CONTEXT_LENGTH": str(self.context_length),
            "OLLAMA_FLASH_ATTENTION": str(self.flash_attention).lower(),
            "OLLAMA_HOST": f"http://{self.host}:{self.port}",
            "OLLAMA_KEEP_ALIVE": format_duration(self.keep_alive),
            "OLLAMA_KV_CACHE_TYPE": self.kv_cache_type,
            "OLLAMA_MODELS": self.models_dir,
            "OLLAMA_NUM_PARALLEL": str(self.num_parallel),
        }
        return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(items.items())) + "]"


def settings_from_env(env: Mapping[str, str]) -> Settings:
    host, port = parse_host(env.get("OLLAMA_HOST", ""))
    models_dir = env.get("OLLAMA_MODELS", "").strip() or os.path.join(
        env.get("HOME", os.path.expanduser("~")), ".ollama", "models"
    )
    try:
        keep_alive = parse_duration(env.get("OLLAMA_KEEP_ALIVE", "").strip() or "5m")
    except ConfigError as exc:
        raise ConfigError(f"OLLAMA_KEEP_ALIVE: {exc}") from None
    rate_text = env.get("VASTLLM_LAB_PULL_RATE", "").strip()
    try:
        pull_rate = float(rate_text) if rate_text else DEFAULT_PULL_RATE
    except ValueError:
        pull_rate = math.nan
    if not (pull_rate > 0 and math.isfinite(pull_rate)):
        raise ConfigError(f"VASTLLM_LAB_PULL_RATE: expected bytes/s > 0, got {rate_text!r}")
    try:
        faults = faults_mod.parse_env(env.get("VASTLLM_LAB_FAULTS", ""))
    except faults_mod.FaultError as exc:
        raise ConfigError(f"VASTLLM_LAB_FAULTS: {exc}") from None
    preload = tuple(p.strip() for p in env.get("VASTLLM_LAB_PRELOAD", "").split(",") if p.strip())
    return Settings(
        host=host,
        port=port,
        models_dir=os.path.abspath(os.path.expanduser(models_dir)),
        keep_alive=keep_alive,
        context_length=_positive_int(env, "OLLAMA_CONTEXT_LENGTH", 4096),
        num_parallel=_positive_int(env, "OLLAMA_NUM_PARALLEL", 1),
        flash_attention=_truthy(env.get("OLLAMA_FLASH_ATTENTION", "")),
        kv_cache_type=env.get("OLLAMA_KV_CACHE_TYPE", "").strip(),
        preload=preload,
        faults=faults,
        pull_rate=pull_rate,
        catalog_path=env.get("VASTLLM_LAB_CATALOG", "").strip() or None,
        version=env.get("VASTLLM_LAB_VERSION", "").strip() or VERSION,
        exit_with_parent=_truthy(env.get("VASTLLM_LAB_EXIT_WITH_PARENT", "")),
    )
