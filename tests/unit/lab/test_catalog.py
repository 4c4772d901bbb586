"""The lab catalog: built-in entries, aliases, digests, and catalog files."""

import json

import pytest

from vastllm_lab.ollama.catalog import (
    CatalogError,
    builtin_catalog,
    catalog_from_json,
    load_catalog,
    name_digest,
)


def test_builtin_models_and_their_declared_figures():
    catalog = builtin_catalog()
    coder = catalog.resolve("qwen3-coder:30b")
    assert coder is not None
    assert 18e9 < coder.size < 20e9
    assert coder.capabilities == ("completion", "tools")
    assert coder.context_length == 262_144
    assert coder.parameter_count == 30_500_000_000
    assert 4.5e9 < catalog.resolve("qwen2.5-coder:7b").size < 5e9
    assert 0.9e9 < catalog.resolve("qwen2.5-coder:1.5b").size < 1.1e9
    assert 4.5e9 < catalog.resolve("llama3.1:8b").size < 5.1e9
    small = catalog.resolve("qwen3:0.6b")
    assert small.has("thinking")
    assert small.has("tools")
    assert not coder.has("thinking")
    assert small.parameter_count == 751_630_000


def test_aliases_and_latest_share_the_digest():
    catalog = builtin_catalog()
    alias = catalog.resolve("qwen3-coder")
    assert alias.name == "qwen3-coder:latest"
    assert alias.digest == catalog.resolve("qwen3-coder:30b").digest
    assert (
        catalog.resolve("library/qwen2.5-coder").digest
        == catalog.resolve("qwen2.5-coder:7b").digest
    )


def test_unknown_and_invalid_names_resolve_to_none():
    catalog = builtin_catalog()
    assert catalog.resolve("qwen3") is None  # qwen3:latest is not in the lab catalog
    assert catalog.resolve("no-such-model") is None
    assert catalog.resolve("bad name") is None


def test_digests_are_stable_and_depend_on_name_and_revision():
    assert name_digest("qwen3:0.6b") == name_digest("qwen3:0.6b")
    assert len(name_digest("qwen3:0.6b")) == 64
    assert name_digest("qwen3:0.6b") != name_digest("qwen3:1.7b")
    assert name_digest("qwen3:0.6b", "2") != name_digest("qwen3:0.6b")
    assert builtin_catalog().resolve("qwen3:0.6b").digest == name_digest("qwen3:0.6b")


def test_catalog_file_extends_with_defaults():
    text = json.dumps({"models": [{"name": "Tiny", "size": 1000, "aliases": ["tiny:1b"]}]})
    catalog = catalog_from_json(text, "c.json", builtin_catalog())
    tiny = catalog.resolve("tiny")
    assert tiny.name == "tiny:latest"
    assert tiny.capabilities == ("completion",)
    assert tiny.family == "llama"
    assert catalog.resolve("tiny:1b").digest == tiny.digest
    assert catalog.resolve("qwen3:0.6b") is not None  # built-ins kept


def test_catalog_file_can_replace_and_override():
    text = json.dumps(
        {
            "replace": True,
            "models": [
                {
                    "name": "qwen3:0.6b",
                    "size": 5,
                    "capabilities": ["completion", "thinking"],
                    "digest": "sha256:" + "b" * 64,
                }
            ],
        }
    )
    catalog = catalog_from_json(text, "c.json", builtin_catalog())
    assert catalog.names() == ["qwen3:0.6b"]
    assert catalog.resolve("qwen3:0.6b").digest == "b" * 64


def test_a_bare_list_is_a_catalog_file():
    catalog = catalog_from_json('[{"name": "x:1", "size": 1, "revision": "r"}]', "f", None)
    assert catalog.resolve("x:1").digest == name_digest("x:1", "r")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{", "not valid JSON"),
        ('{"models": 3}', "expected a list"),
        ('{"modelz": []}', "unknown top-level"),
        ('{"replace": "yes", "models": []}', "'replace' must be"),
        ("[3]", "must be a JSON object"),
        ('[{"size": 1}]', "'name' is required"),
        ('[{"name": "x"}]', "'size' is required"),
        ('[{"name": "x", "size": -1}]', "positive"),
        ('[{"name": "x", "size": true}]', "must be an integer"),
        ('[{"name": "x", "size": 1, "capabilities": ["flying"]}]', "unknown capability"),
        ('[{"name": "x", "size": 1, "digest": "abc"}]', "64 hex"),
        ('[{"name": "x", "size": 1, "colour": "red"}]', "unknown field"),
        ('[{"name": "bad name", "size": 1}]', "invalid model"),
        ('[{"name": "x", "size": 1, "aliases": ["bad alias"]}]', "alias"),
    ],
)
def test_invalid_catalog_files_name_the_problem(text, fragment):
    with pytest.raises(CatalogError, match=fragment) as info:
        catalog_from_json(text, "my-catalog.json", builtin_catalog())
    assert "my-catalog.json" in str(info.value)


def test_load_catalog_reads_the_file_or_says_why_not(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('[{"name": "x:1", "size": 1}]')
    assert load_catalog(str(path)).resolve("x:1") is not None
    assert load_catalog(None).resolve("x:1") is None
    with pytest.raises(CatalogError, match="cannot read catalog file"):
        load_catalog(str(tmp_path / "missing.json"))
