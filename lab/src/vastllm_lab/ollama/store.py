"""The model store: pulled models in memory, persisted as Ollama-like manifests + small blobs.

Layout under OLLAMA_MODELS (like real Ollama):
  manifests/registry.ollama.ai/library/<model>/<tag>   JSON manifest (config + layers)
  blobs/sha256-<hex>                                   config/template/params blobs (real
                                                       digests) and a tiny placeholder for
                                                       the model layer (not the declared GBs)
Read once at start; written on pull, removed on delete. No disk access per request otherwise.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from .catalog import CatalogEntry, entries_from_spec
from .names import InvalidModelName, parse_name

MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
PLACEHOLDER = b"vastllm lab double of Ollama: placeholder for the model layer, no model weights.\n"


@dataclass(frozen=True)
class Blob:
    digest: str  # hex
    media_type: str
    size: int  # declared size (the model layer's is the catalog size)
    data: bytes  # what is written to disk


@dataclass(frozen=True)
class ModelRecord:
    entry: CatalogEntry
    digest: str  # sha256 hex of the manifest: the `digest` of /api/tags
    modified_at: float
    blobs: tuple[str, ...]  # hex digests of the blobs this model's manifest references

    @property
    def name(self) -> str:
        return self.entry.name


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")


def build_manifest(entry: CatalogEntry) -> tuple[bytes, list[Blob]]:
    """The manifest bytes and blobs of a catalog entry (pure, deterministic)."""
    template = entry.template.encode("utf-8")
    params_data: dict[str, Any] = {}
    for line in entry.parameters.splitlines():
        key, _, value = line.partition(" ")
        if key:
            params_data.setdefault(key, []).append(value.strip().strip('"'))
    params = _json_bytes(params_data)
    layers = [
        Blob(entry.digest, MEDIA_MODEL, entry.size, PLACEHOLDER),
        Blob(hashlib.sha256(template).hexdigest(), MEDIA_TEMPLATE, len(template), template),
        Blob(hashlib.sha256(params).hexdigest(), MEDIA_PARAMS, len(params), params),
    ]
    config = _json_bytes(
        {
            "model_format": "gguf",
            "model_family": entry.family,
            "model_families": list(entry.families),
            "model_type": entry.parameter_size,
            "file_type": entry.quantization,
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{b.digest}" for b in layers]},
            # everything but the name: aliases share the manifest (and digest) like in Ollama
            "vastllm_lab": {k: v for k, v in entry.to_dict().items() if k != "name"},
        }
    )
    config_blob = Blob(hashlib.sha256(config).hexdigest(), MEDIA_CONFIG, len(config), config)
    manifest = _json_bytes(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {
                "mediaType": MEDIA_CONFIG,
                "digest": f"sha256:{config_blob.digest}",
                "size": config_blob.size,
            },
            "layers": [
                {"mediaType": b.media_type, "digest": f"sha256:{b.digest}", "size": b.size}
                for b in layers
            ],
        }
    )
    return manifest, [config_blob, *layers]


def manifest_digest(entry: CatalogEntry) -> str:
    return hashlib.sha256(build_manifest(entry)[0]).hexdigest()


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


class ModelStore:
    """Thread-safe in-memory index of the present models, backed by the models directory."""

    def __init__(self, models_dir: str) -> None:
        self.models_dir = models_dir
        self._lock = threading.Lock()
        self._models: dict[str, ModelRecord] = {}

    @property
    def blobs_dir(self) -> str:
        return os.path.join(self.models_dir, "blobs")

    def manifest_path(self, name: str) -> str:
        parsed = parse_name(name)
        return os.path.join(
            self.models_dir,
            "manifests",
            parsed.registry,
            parsed.namespace,
            parsed.model,
            parsed.tag,
        )

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.blobs_dir, f"sha256-{digest}")

    def get(self, name: str) -> ModelRecord | None:
        return self._models.get(name)

    def list(self) -> builtins.list[ModelRecord]:
        with self._lock:
            return sorted(self._models.values(), key=lambda r: (-r.modified_at, r.name))

    def add_memory(self, entry: CatalogEntry) -> ModelRecord:
        """Make a model present without touching the disk (VASTLLM_LAB_PRELOAD)."""
        manifest, blobs = build_manifest(entry)
        record = ModelRecord(
            entry,
            hashlib.sha256(manifest).hexdigest(),
            time.time(),
            tuple(b.digest for b in blobs),
        )
        with self._lock:
            self._models[entry.name] = record
        return record

    def check_writable(self) -> None:
        """Create the directories a pull writes to; raise OSError (with the path) if impossible."""
        os.makedirs(self.blobs_dir, exist_ok=True)
        probe = os.path.join(self.blobs_dir, f".probe-{os.getpid()}-{threading.get_ident()}")
        with open(probe, "wb"):
            pass
        os.unlink(probe)

    def write(self, entry: CatalogEntry) -> ModelRecord:
        """Persist a pulled model (blobs first, manifest last) and index it. Raises OSError."""
        manifest, blobs = build_manifest(entry)
        os.makedirs(self.blobs_dir, exist_ok=True)
        for blob in blobs:
            path = self.blob_path(blob.digest)
            if not os.path.exists(path):
                _write_atomic(path, blob.data)
        path = self.manifest_path(entry.name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write_atomic(path, manifest)
        record = ModelRecord(
            entry,
            hashlib.sha256(manifest).hexdigest(),
            os.stat(path).st_mtime,
            tuple(b.digest for b in blobs),
        )
        with self._lock:
            self._models[entry.name] = record
        return record

    def delete(self, name: str) -> bool:
        """Remove a model and the blobs no other model uses. False when it is not present."""
        with self._lock:
            record = self._models.pop(name, None)
            if record is None:
                return False
            still_used = {d for r in self._models.values() for d in r.blobs}
        path = self.manifest_path(name)
        with contextlib.suppress(FileNotFoundError):  # a preloaded model has no file
            os.unlink(path)
        for digest in record.blobs:
            if digest not in still_used:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.blob_path(digest))
        # prune the now-empty manifest directories (model dir, namespace dir, registry dir)
        directory = os.path.dirname(path)
        for _ in range(3):
            try:
                os.rmdir(directory)
            except OSError:
                break
            directory = os.path.dirname(directory)
        return True

    def load(self) -> builtins.list[str]:
        """Index the manifests on disk; return warnings for files that could not be read."""
        warnings: list[str] = []
        root = os.path.join(self.models_dir, "manifests")
        if not os.path.isdir(root):
            return warnings
        found: dict[str, ModelRecord] = {}
        for dirpath, _dirnames, filenames in os.walk(root):
            for filename in filenames:
                path = os.path.join(dirpath, filename)
                rel = os.path.relpath(path, root).split(os.sep)
                if len(rel) != 4 or ".tmp-" in filename:
                    continue
                try:
                    name = parse_name("/".join(rel[:3]) + ":" + rel[3]).display
                    record = self._read_record(path, name)
                except (OSError, ValueError, KeyError, TypeError, InvalidModelName) as exc:
                    warnings.append(f"skipping manifest {path}: {exc}")
                    continue
                found[name] = record
        with self._lock:
            self._models.update(found)
        return warnings

    def _read_record(self, path: str, name: str) -> ModelRecord:
        with open(path, "rb") as handle:
            manifest = handle.read()
        data = json.loads(manifest)
        config_digest = data["config"]["digest"].split(":", 1)[1]
        with open(self.blob_path(config_digest), "rb") as handle:
            config = json.loads(handle.read())
        spec = dict(config["vastllm_lab"])
        spec["name"] = name
        spec.pop("families", None)
        families = config.get("model_families") or [spec.get("family", "llama")]
        entry = entries_from_spec({**spec, "families": families}, path)[0]
        blobs = (
            config_digest,
            *tuple(layer["digest"].split(":", 1)[1] for layer in data["layers"]),
        )
        return ModelRecord(
            entry, hashlib.sha256(manifest).hexdigest(), os.stat(path).st_mtime, blobs
        )
