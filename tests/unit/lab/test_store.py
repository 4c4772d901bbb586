"""The model store: manifests and blobs on disk, loaded back after a restart."""

import json
import os

import pytest

from vastllm_lab.ollama.catalog import builtin_catalog
from vastllm_lab.ollama.store import PLACEHOLDER, ModelStore, build_manifest, manifest_digest

CATALOG = builtin_catalog()
SMALL = CATALOG.resolve("qwen3:0.6b")


def test_manifest_is_deterministic_and_aliases_share_it():
    assert build_manifest(SMALL) == build_manifest(SMALL)
    coder = CATALOG.resolve("qwen3-coder:30b")
    assert manifest_digest(coder) == manifest_digest(CATALOG.resolve("qwen3-coder"))
    assert manifest_digest(coder) != manifest_digest(SMALL)
    manifest, blobs = build_manifest(SMALL)
    layers = json.loads(manifest)["layers"]
    assert layers[0] == {
        "mediaType": "application/vnd.ollama.image.model",
        "digest": f"sha256:{SMALL.digest}",
        "size": SMALL.size,
    }
    assert blobs[1].data == PLACEHOLDER  # the model layer on disk is tiny


def test_write_then_load_in_a_new_store(tmp_path):
    store = ModelStore(str(tmp_path))
    record = store.write(SMALL)
    path = tmp_path / "manifests/registry.ollama.ai/library/qwen3/0.6b"
    assert path.is_file()
    total = sum(f.stat().st_size for f in (tmp_path / "blobs").iterdir())
    assert total < 10_000  # no declared gigabytes on disk
    again = ModelStore(str(tmp_path))
    assert again.load() == []
    loaded = again.get("qwen3:0.6b")
    assert loaded.digest == record.digest
    assert loaded.entry == SMALL
    assert [r.name for r in again.list()] == ["qwen3:0.6b"]


def test_delete_keeps_blobs_other_models_share(tmp_path):
    store = ModelStore(str(tmp_path))
    store.write(CATALOG.resolve("qwen3-coder:30b"))
    store.write(CATALOG.resolve("qwen3-coder"))
    before = sorted(p.name for p in (tmp_path / "blobs").iterdir())
    assert len(before) == 4  # config, model, template, params: shared by the alias
    assert store.delete("qwen3-coder:30b") is True
    assert store.delete("qwen3-coder:30b") is False
    assert sorted(p.name for p in (tmp_path / "blobs").iterdir()) == before
    assert (tmp_path / "blobs" / f"sha256-{CATALOG.resolve('qwen3-coder').digest}").exists()
    assert store.delete("qwen3-coder:latest") is True
    assert list((tmp_path / "blobs").iterdir()) == []
    assert not (tmp_path / "manifests/registry.ollama.ai").exists()


def test_load_skips_broken_manifests_with_a_warning(tmp_path):
    store = ModelStore(str(tmp_path))
    store.write(SMALL)
    broken = tmp_path / "manifests/registry.ollama.ai/library/broken/1b"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    again = ModelStore(str(tmp_path))
    warnings = again.load()
    assert len(warnings) == 1
    assert "broken" in warnings[0]
    assert [r.name for r in again.list()] == ["qwen3:0.6b"]


def test_memory_only_models_and_missing_dir(tmp_path):
    store = ModelStore(str(tmp_path / "nothing"))
    assert store.load() == []
    store.add_memory(SMALL)
    assert store.get("qwen3:0.6b") is not None
    assert store.delete("qwen3:0.6b") is True


def test_unwritable_dir_raises_oserror_with_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = ModelStore(str(blocker / "models"))
    with pytest.raises(NotADirectoryError) as info:
        store.check_writable()
    assert str(blocker) in (info.value.filename or "")
    with pytest.raises(NotADirectoryError):
        store.write(SMALL)
    assert store.get("qwen3:0.6b") is None
    assert not os.path.exists(blocker / "models")
