"""Fixtures of the module tests (helpers live in ollama_module_run.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ollama_module_run import run_direct, run_module


def _defaults(tmp_path: Path, args: dict[str, Any]) -> dict[str, Any]:
    full: dict[str, Any] = {
        "progress_file": str(tmp_path / "progress.json"),
        "retry_delay": 0.1,
        "retries": 1,
    }
    full.update(args)
    return full


@pytest.fixture
def ollama_model(tmp_path: Path) -> Any:
    """`ollama_model(args, check=..., diff=...)`: run the module file directly (fast)."""

    def run(args: dict[str, Any], check: bool = False, diff: bool = False) -> dict[str, Any]:
        return run_direct(
            "vastllm.stack.ollama_model",
            _defaults(tmp_path, args),
            tmp_path / "args",
            check=check,
            diff=diff,
        )

    return run


@pytest.fixture
def ollama_model_cli(tmp_path: Path) -> Any:
    """Same, through `ansible localhost -m vastllm.stack.ollama_model` (AnsiballZ)."""

    def run(args: dict[str, Any], check: bool = False, diff: bool = False) -> dict[str, Any]:
        return run_module(
            "vastllm.stack.ollama_model", _defaults(tmp_path, args), check=check, diff=diff
        )

    return run
