"""The checkout as the collection vastllm.stack, for tests (pytest plugin `-p ansible_collection`).

``scripts/setup.sh`` links the checkout to ``.cache/collections/ansible_collections/vastllm/stack``.
Loaded before any conftest, this installs Ansible's own collection loader over that path, so tests
import plugin code the way Ansible does (``ansible_collections.vastllm.stack.plugins...``) and
Ansible's plugin loaders find ``vastllm.stack.*`` by FQCN in the same process. Installing it first
matters: a plain namespace-package import of ``ansible_collections`` would hide the collection
from Ansible's loaders for the rest of the session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
COLLECTIONS = REPO / ".cache" / "collections"
COLLECTION = COLLECTIONS / "ansible_collections" / "vastllm" / "stack"
PLUGINS = COLLECTION / "plugins"

if not (COLLECTION / "galaxy.yml").is_file():
    raise RuntimeError(f"{COLLECTION} is not a link to this checkout: run scripts/setup.sh")

from ansible.plugins.loader import fragment_loader, init_plugin_loader  # noqa: E402
from ansible.utils.plugin_docs import get_docstring  # noqa: E402

init_plugin_loader([str(COLLECTIONS)])


def plugin_docs(plugin_type: str, name: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(DOCUMENTATION with its fragments merged, EXAMPLES, RETURN) as ansible-doc shows them."""
    directory = "modules" if plugin_type == "module" else plugin_type
    doc, examples, returns, _metadata = get_docstring(
        str(PLUGINS / directory / f"{name}.py"),
        fragment_loader,
        collection_name="vastllm.stack",
        plugin_type=plugin_type,
    )
    return doc, examples, returns or {}
