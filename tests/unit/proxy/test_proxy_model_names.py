"""The proxy's model-name rule against the shared table (``tests/data/model_names.json``), the
same table the modules' rule (``plugins/module_utils``) is tested against."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vastllm.proxy.names import display_name, key_or_none, name_key

TABLE = Path(__file__).resolve().parents[2] / "data" / "model_names.json"
CASES = json.loads(TABLE.read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("case", CASES, ids=[repr(case["name"]) for case in CASES])
def test_name_rule_follows_the_shared_table(case):
    if case["display"] is None:
        with pytest.raises(ValueError, match="model name"):
            display_name(case["name"])
        with pytest.raises(ValueError, match="model name"):
            name_key(case["name"])
        assert key_or_none(case["name"]) is None
    else:
        assert display_name(case["name"]) == case["display"]
        assert name_key(case["name"]) == case["key"]
        assert key_or_none(case["name"]) == case["key"]


def test_the_table_covers_both_outcomes():
    assert any(case["display"] is None for case in CASES)
    assert any(case["display"] != case["key"] for case in CASES if case["key"] is not None)


def test_digest_pinned_names_are_kept():
    pinned = "qwen3@sha256:" + "a" * 64
    assert display_name(pinned) == pinned
    assert display_name("library/" + pinned) == pinned
