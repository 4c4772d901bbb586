"""Fixtures for the vast.ai unit tests.

The plugin files are loaded from ``plugins/`` exactly as they ship: module_utils under their
Ansible names (``ansible.module_utils.vastai_api``), the module and the inventory plugin by path.
An in-process emulator (``vastllm_lab.vastai``) listens on 127.0.0.1 for the HTTP-level tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from plugin_loader import load_inventory_plugin, load_module, load_module_util
from vastllm_lab.vastai.server import LabServer
from vastllm_lab.vastai.state import LabState

REPO = Path(__file__).resolve().parents[3]


vastai_api = load_module_util("vastai_api")
vastai_offers = load_module_util("vastai_offers")


@pytest.fixture
def api() -> ModuleType:
    return vastai_api


@pytest.fixture
def offers_mod() -> ModuleType:
    return vastai_offers


@pytest.fixture
def module_file() -> ModuleType:
    return load_module("vastai_instance")


@pytest.fixture
def inventory_plugin_module() -> ModuleType:
    return load_inventory_plugin("vastai")


@pytest.fixture
def lab() -> Iterator[LabServer]:
    """An emulator with 60 generated instances, key ``lab-key`` (read-only key ``ro-key``)."""
    from vastllm_lab.vastai.state import generate_instances

    state = LabState(
        api_keys=["lab-key"],
        readonly_keys=["ro-key"],
        instances=generate_instances(60),
        loading_delay=0.2,
    )
    server = LabServer(state).start()
    try:
        yield server
    finally:
        server.stop()
