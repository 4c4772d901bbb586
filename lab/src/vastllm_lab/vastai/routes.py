"""Routing of the vast.ai emulator: (method, path, query) of an API request -> a ``LabState`` call.

Path ids and query parameters are parsed here (400 for bad ones); the operations themselves are in
``state.py``. Paths follow the real API: ``/api/v1/instances/`` (the paginated list), the rest
under ``/api/v0/``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .query import (
    COMPUTED_INSTANCE_FIELDS,
    decode_token_key,
    filter_error,
    page_limit,
    parse_order_by,
    select_cols_error,
)

if TYPE_CHECKING:
    from .state import LabState, Response


def route(state: LabState, method: str, path: str, query: Mapping[str, str], body: Any) -> Response:
    """Answer one API request (already authorized) with the matching ``state`` operation."""
    parts = [p for p in path.split("/") if p]
    if parts[:3] == ["api", "v1", "instances"] and len(parts) == 3 and method == "GET":
        return list_v1(state, query)
    if parts[:2] != ["api", "v0"]:
        return 404, {}, {"success": False, "error": "not_found", "msg": f"no route {path}"}
    rest = parts[2:]
    if rest == ["instances"] and method == "GET":
        return (
            410,
            {},
            {
                "success": False,
                "error": "gone",
                "msg": "the v0 instance list is gone; use /api/v1/instances/",
            },
        )
    if len(rest) == 2 and rest[0] == "instances":
        instance_id = int_or_none(rest[1])
        if instance_id is None:
            return _bad_request("bad id")
        if method == "GET":
            return state.get_instance(instance_id)
        if method == "PUT":
            return state.update_instance(instance_id, body)
        if method == "DELETE":
            return state.destroy_instance(instance_id)
    if len(rest) == 3 and rest[0] == "instances" and rest[2] == "ssh" and method == "POST":
        return state.attach_ssh(int_or_none(rest[1]), body)
    if rest == ["users", "current"] and method == "GET":
        return state.current_user()
    if rest == ["bundles"] and method in ("POST", "GET"):
        q = body if method == "POST" else json_param(query.get("q"), {})
        return state.search(q)
    if rest == ["search", "asks"] and method == "PUT":
        q = body.get("q", {}) if isinstance(body, dict) else {}
        return state.search(q)
    if len(rest) == 2 and rest[0] == "asks" and method == "PUT":
        return state.create(int_or_none(rest[1]), body)
    return 404, {}, {"success": False, "error": "not_found", "msg": f"no route {method} {path}"}


def list_v1(state: LabState, query: Mapping[str, str]) -> Response:
    """``GET /api/v1/instances/?limit=&select_filters=&order_by=&select_cols=&after_token=``.

    As documented: ``limit`` at most 25, ``<= 0`` means 5; a filter or ``order_by`` on an
    unknown or computed column (``dph_total``, ``num_gpus``...) is a 400 naming the column;
    ``select_cols`` picks the returned columns (``["*"]``: all, unknown ones come back null);
    ``next_token`` is accepted as a synonym of ``after_token``.
    """
    try:
        limit = page_limit(query.get("limit"))
    except ValueError:
        return _bad_request("bad limit")
    filters = json_param(query.get("select_filters"), {})
    problem = filter_error(filters, COMPUTED_INSTANCE_FIELDS)
    if problem:
        return _bad_request(problem)
    columns = state.instance_columns()
    unknown = sorted(set(filters) - columns)
    if unknown:
        return _bad_request(f"invalid filter column {unknown[0]!r}: no such instance column")
    order, problem = parse_order_by(
        json_param(query.get("order_by"), None), columns, COMPUTED_INSTANCE_FIELDS
    )
    if problem:
        return _bad_request(problem)
    cols = json_param(query.get("select_cols"), None)
    problem = select_cols_error(cols)
    if problem:
        return _bad_request(problem)
    token = query.get("after_token") or query.get("next_token")
    after, after_key = -1, None
    if token:
        decoded = decode_token_key(token)
        if decoded is None:
            return (
                400,
                {},
                {"success": False, "error": "invalid_token", "msg": "bad pagination token"},
            )
        after, after_key = decoded
    return state.list_instances(limit, filters, after, order=order, cols=cols, after_key=after_key)


def _bad_request(msg: str) -> Response:
    return 400, {}, {"success": False, "error": "invalid_args", "msg": msg}


def int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def json_param(text: str | None, default: Any) -> Any:
    """A JSON query parameter: ``default`` when absent, None when it is not JSON."""
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except ValueError:
        return None
