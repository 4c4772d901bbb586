"""Fixtures for the vast.ai integration tests (defined in vastai_itest_helpers)."""

from __future__ import annotations

from vastai_itest_helpers import banner, lab, lab_factory

__all__ = ["banner", "lab", "lab_factory"]
