"""Fault switches of the lab double (pure parsing/validation; the server applies them).

Set at start with `VASTLLM_LAB_FAULTS` (`key=value,key=value`, list items continue after a comma:
`unknown_model=foo:1b,bar:2b,chunk_delay=0.01`; or a JSON object), changed at run time with
`POST /lab/faults` (JSON object, merged; `null` removes a key), cleared with `DELETE /lab/faults`.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable

from .generation import LEAK_FORMS
from .names import InvalidModelName, normalize


class FaultError(ValueError):
    """An unknown fault or a value of the wrong type; the message names the fault."""


def _names(key: str, value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise FaultError(f"fault {key!r} must be a list of model names, got {value!r}")
    result = []
    for item in items:
        try:
            result.append(normalize(item))
        except InvalidModelName as exc:
            raise FaultError(f"fault {key!r}: {exc}") from None
    return result


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no"):
        return value.lower() in ("1", "true", "yes", "on")
    raise FaultError(f"fault {key!r} must be true or false, got {value!r}")


def _seconds(key: str, value: Any) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not (number >= 0 and math.isfinite(number)):
        raise FaultError(f"fault {key!r} must be a number of seconds >= 0, got {value!r}")
    return number


def _count(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise FaultError(f"fault {key!r} must be an integer >= 0, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise FaultError(f"fault {key!r} must be an integer >= 0, got {value!r}") from None
    if number < 0 or (isinstance(value, float) and value != number):
        raise FaultError(f"fault {key!r} must be an integer >= 0, got {value!r}")
    return number


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise FaultError(f"fault {key!r} must be a non-empty string, got {value!r}")
    return value


def _leak(key: str, value: Any) -> str:
    if not isinstance(value, str) or value not in LEAK_FORMS:
        raise FaultError(
            f"fault {key!r} must be one of {', '.join(LEAK_FORMS)} or null, got {value!r}"
        )
    return value


def _rate(key: str, value: Any) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not (number >= 0 and math.isfinite(number)):
        raise FaultError(
            f"fault {key!r} must be a number of tokens/s >= 0 (0: no delay), got {value!r}"
        )
    return number


FAULTS: dict[str, Callable[[str, Any], Any]] = {
    "unknown_model": _names,
    "pull_fail_after": _names,
    "disk_full": _bool,
    "chunk_delay": _seconds,
    "crash_after_chunks": _count,
    "crash": _bool,
    "busy": _bool,
    "load_delay": _seconds,
    "chat_error": _text,
    # behaviour switches (real-model behaviours rather than failures)
    "tool_call_leak": _leak,
    "prompt_tokens_per_second": _rate,
    "generation_tokens_per_second": _rate,
    "prompt_cache_count": _bool,
}
LIST_FAULTS = ("unknown_model", "pull_fail_after")


def validate(update: Any) -> dict[str, Any]:
    """Validate a fault update (JSON object); `None` values mean "remove this fault"."""
    if not isinstance(update, dict):
        raise FaultError("faults must be a JSON object")
    result: dict[str, Any] = {}
    for key, value in update.items():
        if key not in FAULTS:
            raise FaultError(f"unknown fault {key!r} (known: {', '.join(sorted(FAULTS))})")
        result[key] = None if value is None else FAULTS[key](key, value)
    return result


def merge(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Apply a validated update: set keys, remove keys set to None (and false/empty switches)."""
    merged = dict(current)
    for key, value in update.items():
        if value is None or value is False or value == []:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def parse_env(text: str) -> dict[str, Any]:
    """Parse `VASTLLM_LAB_FAULTS`: a JSON object or `k=v,k=v` (list items go on after a comma)."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise FaultError(f"VASTLLM_LAB_FAULTS is not valid JSON: {exc}") from None
        return merge({}, validate(data))
    raw: dict[str, Any] = {}
    last_key = ""
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if "=" in item:
            key, value = (s.strip() for s in item.split("=", 1))
            raw[key] = [value] if key in LIST_FAULTS else value
            last_key = key
        elif last_key in LIST_FAULTS:
            raw[last_key].append(item)
        else:
            raise FaultError(f"VASTLLM_LAB_FAULTS: expected key=value, got {item!r}")
    return merge({}, validate(raw))
