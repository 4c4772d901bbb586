"""The module's and the inventory plugin's documentation match what the code accepts.

Read as ansible-doc shows it: each DOCUMENTATION merged with its fragments (the options shared
by both live once, in plugins/doc_fragments/vastai.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from ansible_collections.vastllm.stack.plugins.doc_fragments.vastai import ModuleDocFragment

from ansible_collection import plugin_docs

REPO = Path(__file__).resolve().parents[3]
SHARED = set(yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"])


def test_module_docs_are_yaml_and_match_the_argument_spec(module_file):
    docs, examples, returns = plugin_docs("module", "vastai_instance")
    assert returns
    assert yaml.safe_load(examples)
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


def test_shared_options_are_documented_once_and_reach_both(module_file, inventory_plugin_module):
    assert {"api_key", "api_url", "validate_certs", "timeout", "retries"} <= SHARED
    module_docs, _, _ = plugin_docs("module", "vastai_instance")
    inventory_docs, _, _ = plugin_docs("inventory", "vastai")
    for name in SHARED:
        # the module and the inventory show the same text, type and default for each one
        for key in ("description", "type", "default"):
            assert module_docs["options"][name].get(key) == inventory_docs["options"][name].get(key)
    for own in (module_file.DOCUMENTATION, inventory_plugin_module.DOCUMENTATION):
        raw = yaml.safe_load(own)
        assert "vastllm.stack.vastai" in raw["extends_documentation_fragment"]
        assert not SHARED & set(raw["options"]), "shared options are written again"
    assert "requirements" in module_docs
    assert "requirements" in inventory_docs
    assert any(entry.get("link") for entry in module_docs["seealso"])


def test_inventory_reads_the_api_key_and_url_from_the_environment():
    options = plugin_docs("inventory", "vastai")[0]["options"]
    assert options["api_key"]["env"] == [{"name": "VAST_API_KEY"}]
    assert options["api_url"]["env"] == [{"name": "VAST_URL"}]


def test_module_falls_back_to_the_same_environment_variables(module_file):
    spec = module_file.ARGUMENT_SPEC
    assert spec["api_key"]["fallback"][1] == ["VAST_API_KEY"]
    assert spec["api_url"]["fallback"][1] == ["VAST_URL"]


def test_module_hides_secrets_and_supports_check_and_diff(module_file):
    spec = module_file.ARGUMENT_SPEC
    assert spec["api_key"]["no_log"] is True
    assert spec["image_login"]["no_log"] is True
    attributes = plugin_docs("module", "vastai_instance")[0]["attributes"]
    assert attributes["check_mode"]["support"] == "full"
    assert attributes["diff_mode"]["support"] == "full"


def test_every_return_value_is_described():
    for name, doc in plugin_docs("module", "vastai_instance")[2].items():
        assert doc.get("description"), name
        assert doc.get("type"), name
        assert doc.get("returned"), name


def test_inventory_docs_cover_every_option_the_code_reads():
    docs, examples, _ = plugin_docs("inventory", "vastai")
    documented = set(docs["options"])
    source = (REPO / "plugins" / "inventory" / "vastai.py").read_text()
    used = set(re.findall(r'get_option\("([a-z_]+)"\)', source))
    assert used <= documented, used - documented
    # constructed (compose, groups, keyed_groups, strict) and inventory_cache come with it
    assert {"strict", "compose", "groups", "keyed_groups", "cache", "cache_plugin"} <= documented
    for example in yaml.safe_load_all(examples):
        assert example["plugin"] == "vastllm.stack.vastai"
        assert set(example) <= documented


def test_shipped_inventory_file_uses_only_documented_options():
    docs = plugin_docs("inventory", "vastai")[0]
    shipped = yaml.safe_load((REPO / "inventory" / "vastai.yml").read_text())
    assert shipped["plugin"] == "vastllm.stack.vastai"
    assert set(shipped) <= set(docs["options"])
    assert shipped["groups"] == {"vastllm": "vastai_status == 'running'"}
