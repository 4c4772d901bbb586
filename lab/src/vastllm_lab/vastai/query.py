"""The vast.ai query language as the emulator understands it: ``{field: {op: value}}`` filters,
ordering and limits of offer searches, and the page tokens of the v1 instance list.

Pure functions, no state.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

PAGE_LIMIT_MAX = 25


def encode_token(after_id: int) -> str:
    raw = json.dumps({"after": after_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> int | None:
    """The id a page token continues after, or None when the token is malformed."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return int(data["after"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
    "in": lambda a, b: isinstance(b, list) and a in b,
    "notin": lambda a, b: isinstance(b, list) and a not in b,
    "nin": lambda a, b: isinstance(b, list) and a not in b,
    "gt": lambda a, b: a is not None and a > b,
    "gte": lambda a, b: a is not None and a >= b,
    "lt": lambda a, b: a is not None and a < b,
    "lte": lambda a, b: a is not None and a <= b,
}


def filter_error(filters: Any) -> str | None:
    """Why a ``select_filters``/``q`` object is invalid, or None when it is fine."""
    if not isinstance(filters, dict):
        return "filters must be a JSON object"
    for name, cond in filters.items():
        if not isinstance(cond, dict):
            return f"filter on {name!r} must be an object like {{'eq': value}}"
        for op in cond:
            if op not in _OPS:
                return f"unknown operator {op!r} on {name!r}"
    return None


def matches(row: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
    """Whether ``row`` satisfies every ``{field: {op: value}}`` condition."""
    for name, cond in filters.items():
        value = row.get(name)
        for op, expected in cond.items():
            try:
                if not _OPS[op](value, expected):
                    return False
            except TypeError:
                return False
    return True


def _sort_key(name: str) -> Callable[[Mapping[str, Any]], tuple[bool, Any]]:
    def key(offer: Mapping[str, Any]) -> tuple[bool, Any]:
        value = offer.get(name)
        return (value is None, value if value is not None else 0)

    return key


def _region_code(geolocation: str) -> str:
    return geolocation.rsplit(",", 1)[-1].strip() if geolocation else ""


def query_offers(offers: Iterable[Mapping[str, Any]], q: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Apply a vast.ai search query (``{field: {op: value}}`` + order/limit) to offers."""
    conditions = {
        k: v
        for k, v in q.items()
        if k not in ("order", "limit", "type", "allocated_storage", "disable_bundling")
    }
    result = []
    for offer in offers:
        row = dict(offer)
        row["geolocation_code"] = _region_code(str(offer.get("geolocation") or ""))
        if matches(row, conditions):
            result.append(dict(offer))
    for name, direction in reversed(q.get("order") or []):
        result.sort(key=_sort_key(str(name)), reverse=direction == "desc")
    limit = q.get("limit")
    if isinstance(limit, int) and limit > 0:
        result = result[:limit]
    storage = q.get("allocated_storage")
    if isinstance(storage, int | float):
        for offer in result:
            offer["allocated_storage"] = storage
    return result
