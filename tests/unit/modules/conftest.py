"""Register our module_utils under ``ansible.module_utils`` before the tests import them."""

from __future__ import annotations

import plugin_loader  # noqa: F401  (registers on import)
