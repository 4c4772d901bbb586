"""The vast.ai query language as the emulator understands it: ``{field: {op: value}}`` filters,
ordering and limits of offer searches, the v1 instance list's parameters (``select_filters``,
``order_by``, ``select_cols``, ``limit``) and its page tokens.

The real ``vastai`` CLI sends the numbers of a query as strings (``'num_gpus=1'`` becomes
``{"num_gpus": {"eq": "1"}}``); the API converts an operand to the column's type before it
compares, and so does ``coerce`` here.

Pure functions, no state.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping
from functools import cmp_to_key
from typing import Any

PAGE_LIMIT_MAX = 25
# What the v1 listing uses for ``limit<=0`` (documented: "Values <= 0 are treated as 5").
PAGE_LIMIT_NON_POSITIVE = 5

# Instance columns the v1 listing computes per row (prices, durations, GPU counts): the real API
# answers 400 to a ``select_filters`` or ``order_by`` on them (documented examples: ``dph_total``,
# ``num_gpus``). Everything else stored on the contract is filterable.
COMPUTED_INSTANCE_FIELDS = frozenset(
    {
        "dph_total",
        "dph_base",
        "num_gpus",
        "gpu_totalram",
        "duration",
        "uptime_mins",
        "storage_cost",
        "storage_total_cost",
        "inet_up_cost",
        "inet_down_cost",
        "vram_costperhour",
        "search",
        "instance",
        "time_remaining",
        "time_remaining_isbid",
        "client_run_time",
        "host_run_time",
        "credit_balance",
        "credit_discount",
        "credit_discount_max",
        "dlperf_per_dphtotal",
        "flops_per_dphtotal",
    }
)

# Offer search types: the CLI sends ``on-demand`` (``--type``), the spec's enum says ``ondemand``.
OFFER_TYPES = frozenset({"on-demand", "ondemand", "bid", "reserved", "interruptible"})


def encode_token(after_id: int, key: list[Any] | None = None) -> str:
    """A keyset page token: the last row's id and (when ordered by more) its sort key."""
    data: dict[str, Any] = {"after": after_id}
    if key is not None:
        data["key"] = key
    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token_key(token: str) -> tuple[int, list[Any] | None] | None:
    """(id, sort key or None) a page token continues after, or None when it is malformed."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        key = data.get("key")
        if key is not None and not isinstance(key, list):
            return None
        return int(data["after"]), key
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
        return None


def decode_token(token: str) -> int | None:
    """The id a page token continues after, or None when the token is malformed."""
    decoded = decode_token_key(token)
    return None if decoded is None else decoded[0]


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


def filter_error(filters: Any, computed: Iterable[str] = ()) -> str | None:
    """Why a ``select_filters``/``q`` object is invalid, or None when it is fine.

    ``computed`` names the columns that cannot be filtered on (the message names the field).
    """
    if not isinstance(filters, dict):
        return "filters must be a JSON object"
    refused = frozenset(computed)
    for name, cond in filters.items():
        if name in refused:
            return (
                f"invalid filter column {name!r}: it is computed per row and cannot be "
                "filtered on (filter client-side instead)"
            )
        if not isinstance(cond, dict):
            return f"filter on {name!r} must be an object like {{'eq': value}}"
        for op in cond:
            if op not in _OPS:
                return f"unknown operator {op!r} on {name!r}"
    return None


_TRUE = frozenset({"true", "True", "1"})
_FALSE = frozenset({"false", "False", "0"})


def _coerce_one(column: Any, operand: Any) -> Any:
    if not isinstance(operand, str) or column is None:
        return operand
    text = operand.strip()
    if isinstance(column, bool):
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        return operand
    if isinstance(column, int | float):
        try:
            return float(text)
        except ValueError:
            return operand
    return operand


def coerce(column: Any, operand: Any) -> Any:
    """``operand`` converted to the type of the row's ``column`` value, as the API does.

    ``coerce(1, "1") == 1.0``, ``coerce(0.35, "0.6") == 0.6``, ``coerce(True, "true") is True``,
    list operands (``in``/``notin``) element by element; a string column, a missing (None) column
    or an operand that does not parse is left as it came.
    """
    if isinstance(operand, list):
        return [_coerce_one(column, item) for item in operand]
    return _coerce_one(column, operand)


def matches(row: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
    """Whether ``row`` satisfies every ``{field: {op: value}}`` condition (operands coerced)."""
    for name, cond in filters.items():
        value = row.get(name)
        for op, expected in cond.items():
            try:
                if not _OPS[op](value, coerce(value, expected)):
                    return False
            except TypeError:
                return False
    return True


def page_limit(text: str | None) -> int:
    """The v1 listing's page size from its ``limit`` parameter (ValueError when not a number).

    Absent: 25; above 25: 25; ``<= 0``: 5 (as documented).
    """
    if text is None or text == "":
        return PAGE_LIMIT_MAX
    limit = int(text)
    if limit <= 0:
        return PAGE_LIMIT_NON_POSITIVE
    return min(limit, PAGE_LIMIT_MAX)


def parse_order_by(
    spec: Any, columns: Iterable[str], computed: Iterable[str] = ()
) -> tuple[list[tuple[str, bool]], str | None]:
    """``[{"col": "start_date", "dir": "desc"}]`` -> ``[("start_date", True), ("id", False)]``.

    The second item of each pair is "descending". A ``dir`` other than ``asc``/``desc`` means
    ``asc``; ``id`` is appended as the tiebreaker; an unknown or computed column, or a malformed
    spec, gives ``([], reason)``. None/absent means ``[("id", False)]``.
    """
    if spec is None:
        return [("id", False)], None
    if not isinstance(spec, list):
        return [], "order_by must be a JSON array of {'col': ..., 'dir': ...}"
    known, refused = frozenset(columns), frozenset(computed)
    keys: list[tuple[str, bool]] = []
    for item in spec:
        if not isinstance(item, dict) or not isinstance(item.get("col"), str):
            return [], "order_by entries must be objects like {'col': 'id', 'dir': 'asc'}"
        col = item["col"]
        if col not in known or col in refused:
            return [], f"invalid order_by column {col!r}"
        keys.append((col, str(item.get("dir", "asc")).lower() == "desc"))
    if "id" not in [col for col, _ in keys]:
        keys.append(("id", False))
    return keys, None


def _cmp_values(a: Any, b: Any) -> int:
    """Total order for one column: None after everything, then by value (type name on mismatch)."""
    if a is None or b is None:
        return (a is None) - (b is None)
    try:
        return int(a > b) - int(a < b)
    except TypeError:
        ta, tb = type(a).__name__, type(b).__name__
        return int(ta > tb) - int(ta < tb)


def compare_keys(a: list[Any], b: list[Any], descending: list[bool]) -> int:
    """-1/0/1: whether sort key ``a`` comes before, with or after ``b`` (per-column direction)."""
    for x, y, desc in zip(a, b, descending, strict=False):
        c = _cmp_values(x, y)
        if c:
            return -c if desc else c
    return 0


def sort_key_of(row: Mapping[str, Any], keys: list[tuple[str, bool]]) -> list[Any]:
    return [row.get(col) for col, _ in keys]


def order_rows(
    rows: Iterable[Mapping[str, Any]], keys: list[tuple[str, bool]]
) -> list[Mapping[str, Any]]:
    """``rows`` sorted by ``keys`` (``parse_order_by``'s result)."""
    descending = [desc for _, desc in keys]

    def cmp(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
        return compare_keys(sort_key_of(a, keys), sort_key_of(b, keys), descending)

    return sorted(rows, key=cmp_to_key(cmp))


def select_columns(row: Mapping[str, Any], cols: Any) -> dict[str, Any]:
    """The row restricted to ``cols`` (``["*"]`` or None: all; unknown names come back null)."""
    if cols is None or cols == ["*"] or (isinstance(cols, list) and "*" in cols):
        return dict(row)
    return {str(col): row.get(str(col)) for col in cols}


def select_cols_error(cols: Any) -> str | None:
    if cols is None:
        return None
    if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
        return "select_cols must be a JSON array of column names"
    return None


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
