"""Typed settings of the proxy, read from command-line flags and ``VASTLLM_*`` variables.

Every setting has a flag (``--ollama-url``) and an environment variable (``VASTLLM_OLLAMA_URL``);
a flag wins over the variable, the variable over the default. Parsing is pure: ``load_settings``
takes the argv list and an environment mapping and either returns ``Settings`` or raises
``ConfigError`` with one clear message naming the setting at fault.
"""

from __future__ import annotations

import argparse
import fnmatch
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import orjson

ENV_PREFIX = "VASTLLM_"
DEFAULT_MODEL = "qwen3-coder:30b"
DEFAULT_ALIAS_PATTERN = "claude-*"


class ConfigError(Exception):
    """A setting is missing or wrong; the message names it and is fit to show a user."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    ollama_url: str = "http://127.0.0.1:11434"
    redis_url: str = "redis://127.0.0.1:6379/0"
    api_key: str | None = field(default=None, repr=False)
    model: str = DEFAULT_MODEL
    model_map: tuple[tuple[str, str], ...] = ()
    cache_ttl: int = 86400
    max_request_bytes: int = 32 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 1800.0
    first_token_timeout: float = 600.0  # a streamed generation's first token, at most
    ping_interval: float = 5.0  # SSE ping while a streaming client waits for the first token
    log_format: str = "text"
    log_level: str = "INFO"
    open_metrics: bool = False
    # Limits of the listening port (server.py); docs/proxy.md "Limits and timeouts".
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    body_timeout: float = 30.0
    max_header_bytes: int = 64 * 1024
    max_other_body_bytes: int = 64 * 1024
    max_connections: int = 10000
    cache_max_entry_bytes: int = 1024 * 1024
    # Tokens the model's context holds: sent as num_ctx with every chat (docs/proxy.md
    # "The context window"); the ollama role's default ollama_context_length.
    context_window: int = 65536
    # Notes for the start-up log (e.g. a key file others can read); never secrets.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def cache_enabled(self) -> bool:
        return bool(self.redis_url)

    @property
    def alias_rules(self) -> tuple[tuple[str, str], ...]:
        """Model-name rules in the order they are checked: the map, then ``claude-*``."""
        return (*self.model_map, (DEFAULT_ALIAS_PATTERN, self.model))


@dataclass(frozen=True, slots=True)
class _Option:
    name: str  # attribute of Settings, also the flag (dashes) and the env var (upper case)
    parse: Callable[[str], Any]
    help: str


def _parse_port(raw: str) -> int:
    port = _parse_int(raw)
    if not 0 <= port <= 65535:
        raise ValueError("must be between 0 and 65535")
    return port


def _parse_int(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError(f"must be an integer, got {raw!r}") from None


def _parse_positive_int(raw: str) -> int:
    value = _parse_int(raw)
    if value <= 0:
        raise ValueError(f"must be a positive integer, got {raw!r}")
    return value


def _parse_positive_float(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"must be a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a positive number of seconds, got {raw!r}")
    return value


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _parse_http_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
    except ValueError:
        raise ValueError("must be an http:// or https:// URL (it does not parse)") from None
    if parts.scheme not in {"http", "https"} or not hostname:
        # Never repeat a password the URL may carry (the message goes to stderr and logs).
        raise ValueError(f"must be an http:// or https:// URL, got {redact_url(raw.strip())!r}")
    return value


def _parse_redis_url(raw: str) -> str:
    value = raw.strip()
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ValueError(
            "must be a redis://, rediss:// or unix:// URL, or empty to disable the cache"
        )
    from vastllm.proxy.resp import RespClient

    RespClient(value)  # checks the database number and the rest of the URL, no I/O
    return value


def _parse_log_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"text", "json"}:
        raise ValueError(f"must be text or json, got {raw!r}")
    return value


def _parse_log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError(f"must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {raw!r}")
    return value


def _parse_nonempty(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def parse_model_map(raw: str) -> tuple[tuple[str, str], ...]:
    """``{"claude-*haiku*": "qwen2.5-coder:7b"}`` → ordered (pattern, backend model) pairs."""
    if not raw.strip():
        return ()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"must be a JSON object of pattern to model name ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object of pattern to model name")
    rules: list[tuple[str, str]] = []
    for pattern, target in data.items():
        if not pattern.strip() or not isinstance(target, str) or not target.strip():
            raise ValueError(f"entry {pattern!r}: pattern and model name must be non-empty strings")
        rules.append((pattern.strip(), target.strip()))
    return tuple(rules)


_OPTIONS: tuple[_Option, ...] = (
    _Option("host", _parse_nonempty, "listen address (default 127.0.0.1)"),
    _Option("port", _parse_port, "listen port (default 8000)"),
    _Option("ollama_url", _parse_http_url, "Ollama base URL (default http://127.0.0.1:11434)"),
    _Option("redis_url", _parse_redis_url, "Redis URL; empty disables the cache"),
    _Option("api_key", str, "API key clients must send (x-api-key or Bearer)"),
    _Option("api_key_file", str, "file holding the API key"),
    _Option("model", _parse_nonempty, f"default backend model (default {DEFAULT_MODEL})"),
    _Option("model_map", parse_model_map, "JSON object: glob pattern -> backend model"),
    _Option("cache_ttl", _parse_positive_int, "cache entry lifetime in seconds (default 86400)"),
    _Option("max_request_bytes", _parse_positive_int, "largest accepted request body"),
    _Option("connect_timeout", _parse_positive_float, "Ollama connect timeout, s (default 5)"),
    _Option("read_timeout", _parse_positive_float, "Ollama read timeout, s (default 1800)"),
    _Option("first_token_timeout", _parse_positive_float, "s to the first token (default 600)"),
    _Option("ping_interval", _parse_positive_float, "s between SSE pings (default 5)"),
    _Option("log_format", _parse_log_format, "text or json (default text)"),
    _Option("log_level", _parse_log_level, "DEBUG, INFO, WARNING, ERROR (default INFO)"),
    _Option("open_metrics", parse_bool, "serve /metrics and /v1/models without the key"),
    _Option("header_timeout", _parse_positive_float, "s to send a request's headers (default 10)"),
    _Option("keepalive_timeout", _parse_positive_float, "s an idle connection stays (default 75)"),
    _Option("body_timeout", _parse_positive_float, "s a request body may stall (default 30)"),
    _Option("max_header_bytes", _parse_positive_int, "largest request head (default 65536)"),
    _Option("max_other_body_bytes", _parse_positive_int, "largest body, other routes (65536)"),
    _Option("max_connections", _parse_positive_int, "open connections at most (default 10000)"),
    _Option("cache_max_entry_bytes", _parse_positive_int, "largest cached answer (1048576)"),
    _Option("context_window", _parse_positive_int, "tokens of the model's context (65536)"),
)

# Settings whose value is, or may contain, a secret: never accepted as a command-line flag,
# where every user of the machine sees it (``ps``, /proc/PID/cmdline).
_SECRET_FLAGS = {
    "api_key": "the key",
    "redis_url": "a Redis URL with a password",
    "ollama_url": "an Ollama URL with credentials",
}


def env_name(option: str) -> str:
    return ENV_PREFIX + option.upper()


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vastllm-proxy",
        description="Anthropic Messages API in front of Ollama, with a Redis cache.",
        epilog="Every flag can also be set by its VASTLLM_* environment variable, "
        "e.g. --ollama-url <-> VASTLLM_OLLAMA_URL.",
    )
    for option in _OPTIONS:
        parser.add_argument(
            "--" + option.name.replace("_", "-"),
            dest=option.name,
            metavar="VALUE",
            default=None,
            help=f"{option.help} [{env_name(option.name)}]",
        )
    return parser


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _read_key_file(path: str, warnings: list[str]) -> str:
    try:
        mode = Path(path).stat().st_mode
        key = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"{env_name('api_key_file')}: cannot read key file {path!r}: {exc.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{env_name('api_key_file')}: key file {path!r} is not text") from None
    if not key:
        raise ConfigError(f"{env_name('api_key_file')}: key file {path!r} is empty")
    if mode & 0o077:
        warnings.append(
            f"{env_name('api_key_file')}: key file {path!r} has mode {mode & 0o777:04o}, "
            "other users may read it: chmod 600"
        )
    return key


def url_has_secret(url: str) -> bool:
    """Whether a URL carries a password (``user:pass@``, a bare ``user@`` token, or
    ``?password=``)."""
    try:
        parts = urlsplit(url.strip())
        return bool(parts.password or parts.username or "password" in parse_qs(parts.query))
    except ValueError:
        return "@" in url or "password" in url.lower()


def _refuse_secret_flag(name: str, raw: str) -> None:
    if name == "api_key" or (name in _SECRET_FLAGS and url_has_secret(raw)):
        flag = "--" + name.replace("_", "-")
        where = (
            f"{env_name('api_key')} or {env_name('api_key_file')} (a 0600 file)"
            if name == "api_key"
            else env_name(name)
        )
        raise ConfigError(
            f"{flag}: refusing {_SECRET_FLAGS[name]} on the command line, where every user "
            f"of the machine can read it (ps); set {where} instead"
        )


def load_settings(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Settings:
    """Flags win over environment variables, which win over defaults."""
    environ = os.environ if env is None else env
    parser = _argument_parser()
    try:
        namespace = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse already printed usage; map to a ConfigError
        if exc.code == 0:
            raise
        raise ConfigError("invalid command line (see --help)") from None

    values: dict[str, Any] = {}
    warnings: list[str] = []
    key_file: str | None = None
    for option in _OPTIONS:
        flag_value = getattr(namespace, option.name)
        source = "--" + option.name.replace("_", "-")
        if flag_value is not None:
            _refuse_secret_flag(option.name, flag_value)
        raw = flag_value
        if raw is None:
            raw = environ.get(env_name(option.name))
            source = env_name(option.name)
        if raw is None:
            continue
        try:
            value = option.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        if option.name == "api_key_file":
            key_file = value.strip() or None
        elif option.name == "api_key":
            values["api_key"] = value.strip() or None
        else:
            values[option.name] = value

    if key_file is not None:
        if values.get("api_key"):
            raise ConfigError(
                f"set only one of {env_name('api_key')} and {env_name('api_key_file')}"
            )
        values["api_key"] = _read_key_file(key_file, warnings)

    settings = Settings(**values, warnings=tuple(warnings))
    if not settings.api_key and not is_loopback(settings.host):
        raise ConfigError(
            f"refusing to listen on non-loopback address {settings.host!r} without an API key: "
            f"set {env_name('api_key')} or {env_name('api_key_file')}"
        )
    return settings


def resolve_model(name: str, rules: Sequence[tuple[str, str]]) -> str | None:
    """The backend model for a client's model name, or None when no rule matches."""
    for pattern, target in rules:
        if fnmatch.fnmatchcase(name, pattern):
            return target
    return None


def redact_url(url: str) -> str:
    """The URL without its password (``user:pass@`` or ``?password=``), fit for a log line.

    A URL that does not parse is replaced whole when it might hold a secret."""
    try:
        parts = urlsplit(url)
        password, username, port = parts.password, parts.username, parts.port
    except ValueError:
        return "<unparsable URL>" if ("@" in url or "password" in url.lower()) else url
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(name.lower() == "password" for name, _value in pairs):
        query = urlencode(
            [(name, "***" if name.lower() == "password" else value) for name, value in pairs],
            safe="*/",
        )
    if password is None and username is None and query == parts.query:
        return url
    netloc = parts.netloc
    if password is not None or username is not None:
        # user:***@ when there is a password; a lone user name may be a token: ***@
        user = f"{username or ''}:***" if password is not None else "***"
        host = parts.hostname or ""
        netloc = f"{user}@[{host}]" if ":" in host else f"{user}@{host}"
        if port:
            netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """The secret strings of the settings, for scrubbing from every log line."""
    found: list[str] = []
    if settings.api_key:
        found.append(settings.api_key)
    for url in (settings.redis_url, settings.ollama_url):
        try:
            parts = urlsplit(url)
            candidates = [parts.password, *parse_qs(parts.query).get("password", [])]
        except ValueError:
            continue
        for candidate in candidates:
            if candidate:
                found.extend({candidate, unquote(candidate)})
    return tuple(secret for secret in found if len(secret) >= 4)


def log_level_number(settings: Settings) -> int:
    return int(logging.getLevelName(settings.log_level))
