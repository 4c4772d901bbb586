"""Fixtures for the vast.ai unit tests.

The plugin code is imported as Ansible imports it from the collection
(``ansible_collections.vastllm.stack.plugins...``; pytest finds ``.cache/collections``).
An in-process emulator (``vastllm_lab.vastai``) listens on 127.0.0.1 for the HTTP-level tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from ansible_collections.vastllm.stack.plugins.inventory import vastai as vastai_inventory
from ansible_collections.vastllm.stack.plugins.module_utils import vastai_api, vastai_offers
from ansible_collections.vastllm.stack.plugins.modules import vastai_instance

from vastllm_lab.vastai.server import LabServer
from vastllm_lab.vastai.state import LabState

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def api() -> ModuleType:
    return vastai_api


@pytest.fixture
def offers_mod() -> ModuleType:
    return vastai_offers


@pytest.fixture
def module_file() -> ModuleType:
    return vastai_instance


@pytest.fixture
def inventory_plugin_module() -> ModuleType:
    return vastai_inventory


@pytest.fixture
def lab() -> Iterator[LabServer]:
    """An emulator with 60 generated instances, key ``lab-key`` (read-only key ``ro-key``)."""
    from vastllm_lab.vastai.fixtures import generate_instances

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
