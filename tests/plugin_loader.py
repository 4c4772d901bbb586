"""Load our module_utils as Ansible names them (``ansible.module_utils.<file>``), and modules.

The modules import ``from ansible.module_utils.model_fit import ...``; Ansible resolves that
from ``./plugins/module_utils`` when it builds the module payload. Here we register the same
files under the same names so the tests import exactly what ships.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import ansible.module_utils

REPO = Path(__file__).resolve().parents[1]


def _load(full: str, path: Path) -> ModuleType:
    if full in sys.modules:
        return sys.modules[full]
    spec = importlib.util.spec_from_file_location(full, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    spec.loader.exec_module(module)
    return module


def load_module_util(name: str) -> ModuleType:
    module = _load(f"ansible.module_utils.{name}", REPO / "plugins" / "module_utils" / f"{name}.py")
    setattr(ansible.module_utils, name, module)
    return module


def load_module(name: str) -> ModuleType:
    return _load(f"vastllm_test_modules.{name}", REPO / "plugins" / "modules" / f"{name}.py")


load_module_util("model_fit")
load_module_util("ollama_api")


def load_inventory_plugin(name: str) -> ModuleType:
    return _load(f"vastllm_test_inventory.{name}", REPO / "plugins" / "inventory" / f"{name}.py")
