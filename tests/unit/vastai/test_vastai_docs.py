"""The module's and the inventory plugin's documentation match what the code accepts."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]


def test_module_docs_are_yaml_and_match_the_argument_spec(module_file):
    docs = yaml.safe_load(module_file.DOCUMENTATION)
    assert yaml.safe_load(module_file.RETURN)
    assert yaml.safe_load(module_file.EXAMPLES)
    options = docs["options"]
    spec = module_file.ARGUMENT_SPEC
    assert set(options) == set(spec)
    for name, doc in options.items():
        assert doc["type"] == spec[name]["type"], name
        assert doc.get("default") == spec[name].get("default"), name
        assert doc.get("choices") == spec[name].get("choices"), name
        assert doc.get("elements") == spec[name].get("elements"), name
        assert bool(doc.get("required")) == bool(spec[name].get("required")), name
        assert doc.get("description"), name


def test_module_hides_secrets_and_supports_check_and_diff(module_file):
    spec = module_file.ARGUMENT_SPEC
    assert spec["api_key"]["no_log"] is True
    assert spec["image_login"]["no_log"] is True
    attributes = yaml.safe_load(module_file.DOCUMENTATION)["attributes"]
    assert attributes["check_mode"]["support"] == "full"
    assert attributes["diff_mode"]["support"] == "full"


def test_every_return_value_is_described(module_file):
    for name, doc in yaml.safe_load(module_file.RETURN).items():
        assert doc.get("description"), name
        assert doc.get("type"), name
        assert doc.get("returned"), name


def test_inventory_docs_cover_every_option_the_code_reads(inventory_plugin_module):
    docs = yaml.safe_load(inventory_plugin_module.DOCUMENTATION)
    documented = set(docs["options"])
    source = (REPO / "plugins" / "inventory" / "vastai.py").read_text()
    used = set(re.findall(r'get_option\("([a-z_]+)"\)', source))
    from_fragments = {"strict", "compose", "groups", "keyed_groups", "cache"}
    assert used - from_fragments <= documented, used - from_fragments - documented
    assert docs["extends_documentation_fragment"] == ["constructed", "inventory_cache"]
    for example in yaml.safe_load_all(inventory_plugin_module.EXAMPLES):
        assert example["plugin"] == "vastai"
        assert set(example) - {"plugin"} <= documented | from_fragments | {
            "cache_plugin", "cache_connection", "cache_timeout"
        }  # fmt: skip


def test_shipped_inventory_file_uses_only_documented_options(inventory_plugin_module):
    docs = yaml.safe_load(inventory_plugin_module.DOCUMENTATION)
    shipped = yaml.safe_load((REPO / "inventory" / "vastai.yml").read_text())
    fragments = {"groups", "cache", "cache_plugin", "cache_connection", "cache_timeout"}
    assert set(shipped) <= set(docs["options"]) | fragments
    assert shipped["groups"] == {"vastllm": "vastai_status == 'running'"}
