"""The modules' model-name rule (plugins/module_utils/_model_names.py) against the shared table.

tests/data/model_names.json is the one list of cases every normalizer in vastllm must agree on
(the proxy's own copy is checked against it elsewhere). One test id per case.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.vastllm.stack.plugins.module_utils._model_names import (
    ModelNameError,
    display_name,
    name_key,
    same_model,
)
from ansible_collections.vastllm.stack.plugins.module_utils.model_fit import (
    CandidateError,
    model_key,
    normalize_name,
)

TABLE = Path(__file__).resolve().parents[2] / "data" / "model_names.json"
CASES: list[dict[str, Any]] = json.loads(TABLE.read_text(encoding="utf-8"))["cases"]


def _id(case: dict[str, Any]) -> str:
    return repr(case["name"])


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_module_rule_matches_the_shared_table(case: dict[str, Any]) -> None:
    if case["display"] is None:
        with pytest.raises(ModelNameError):
            display_name(case["name"])
        with pytest.raises(ModelNameError):
            name_key(case["name"])
        return
    assert display_name(case["name"]) == case["display"]
    assert name_key(case["name"]) == case["key"]


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_candidate_parsing_uses_the_same_rule(case: dict[str, Any]) -> None:
    """model_fit (ollama_model's candidates) delegates; a bad name is a CandidateError."""
    if case["display"] is None:
        with pytest.raises(CandidateError):
            normalize_name(case["name"])
        return
    assert normalize_name(case["name"]) == case["display"]
    assert model_key(case["name"]) == case["key"]


def test_table_is_well_formed() -> None:
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "a case is listed twice"
    for case in CASES:
        assert set(case) == {"name", "display", "key"}
        assert (case["display"] is None) == (case["key"] is None)


def test_same_model_ignores_case_and_the_default_prefix() -> None:
    assert same_model("registry.ollama.ai/library/Qwen3-Coder:30B", "qwen3-coder:30b")
    assert not same_model("user/qwen3:8b", "qwen3:8b")
