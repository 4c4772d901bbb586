"""The lab double's "registry": which models can be pulled, with their declared metadata.

Pure data and functions. The built-in catalog mirrors the real models' published figures (download
size, parameter size, family, quantization, context length, capabilities); a JSON file
(`VASTLLM_LAB_CATALOG`) may add entries or replace the built-in ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .names import InvalidModelName, normalize

CAPABILITIES = ("completion", "tools", "thinking", "vision", "insert", "embedding")

_QWEN_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
_QWEN_PARAMETERS = (
    'stop "<|im_start|>"\nstop "<|im_end|>"\nstop "<|endoftext|>"\n'
    "temperature 0.7\ntop_k 20\ntop_p 0.8\nrepeat_penalty 1.05"
)
_LLAMA_TEMPLATE = (
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
_LLAMA_PARAMETERS = (
    'stop "<|start_header_id|>"\nstop "<|end_header_id|>"\nstop "<|eot_id|>"\ntemperature 0.6'
)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PARAM_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMBT])$")
_MULTIPLIER = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


class CatalogError(ValueError):
    """A catalog file or entry is invalid; the message names the file/entry and the field."""


@dataclass(frozen=True)
class CatalogEntry:
    """One pullable model (one name; aliases are separate entries sharing the digest)."""

    name: str
    size: int
    family: str
    families: tuple[str, ...]
    parameter_size: str
    quantization: str
    context_length: int
    embedding_length: int
    capabilities: tuple[str, ...]
    template: str
    parameters: str
    digest: str  # sha256 hex of the model layer ("sha256:" not included)
    license: str = "Lab double: no model weights, no license."

    @property
    def parameter_count(self) -> int:
        match = _PARAM_SIZE.match(self.parameter_size)
        if not match:
            return 0
        return int(float(match.group(1)) * _MULTIPLIER[match.group(2)])

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def renamed(self, name: str) -> CatalogEntry:
        return CatalogEntry(**{**self.to_dict(), "name": name})

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "family": self.family,
            "families": self.families,
            "parameter_size": self.parameter_size,
            "quantization": self.quantization,
            "context_length": self.context_length,
            "embedding_length": self.embedding_length,
            "capabilities": self.capabilities,
            "template": self.template,
            "parameters": self.parameters,
            "digest": self.digest,
            "license": self.license,
        }


def name_digest(name: str, revision: str = "") -> str:
    """The stable model-layer digest of a model: same name (and revision) -> same digest."""
    seed = f"vastllm-lab-ollama/{name}" + (f"#{revision}" if revision else "")
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()


@dataclass
class Catalog:
    """Entries by normalized display name (aliases included)."""

    entries: dict[str, CatalogEntry] = field(default_factory=dict)

    def resolve(self, name: str) -> CatalogEntry | None:
        """The entry for a model reference, or None when the registry does not have it."""
        try:
            return self.entries.get(normalize(name))
        except InvalidModelName:
            return None

    def names(self) -> list[str]:
        return sorted(self.entries)


def _spec(
    name: str,
    size: int,
    family: str,
    parameter_size: str,
    context_length: int,
    embedding_length: int,
    capabilities: tuple[str, ...],
    aliases: tuple[str, ...] = (),
    qwen: bool = True,
) -> dict[str, Any]:
    return {
        "name": name,
        "size": size,
        "family": family,
        "parameter_size": parameter_size,
        "quantization": "Q4_K_M",
        "context_length": context_length,
        "embedding_length": embedding_length,
        "capabilities": list(capabilities),
        "aliases": list(aliases),
        "template": _QWEN_TEMPLATE if qwen else _LLAMA_TEMPLATE,
        "parameters": _QWEN_PARAMETERS if qwen else _LLAMA_PARAMETERS,
    }


BUILTIN_SPECS: tuple[dict[str, Any], ...] = (
    _spec(
        "qwen3-coder:30b",
        18_556_701_152,
        "qwen3moe",
        "30.5B",
        262_144,
        2048,
        ("completion", "tools"),
        aliases=("qwen3-coder:latest",),
    ),
    _spec(
        "qwen2.5-coder:7b",
        4_683_087_519,
        "qwen2",
        "7.6B",
        32_768,
        3584,
        ("completion", "tools", "insert"),
        aliases=("qwen2.5-coder:latest",),
    ),
    _spec(
        "qwen2.5-coder:1.5b",
        986_062_089,
        "qwen2",
        "1.5B",
        32_768,
        1536,
        ("completion", "tools", "insert"),
    ),
    _spec(
        "llama3.1:8b",
        4_920_753_328,
        "llama",
        "8.0B",
        131_072,
        4096,
        ("completion", "tools"),
        aliases=("llama3.1:latest",),
        qwen=False,
    ),
    _spec(
        "qwen3:0.6b",
        522_653_767,
        "qwen3",
        "751.63M",
        40_960,
        1024,
        ("completion", "tools", "thinking"),
    ),
)


def _field(spec: dict[str, Any], key: str, kind: type, where: str, default: Any = None) -> Any:
    value = spec.get(key, default)
    if value is None:
        raise CatalogError(f"{where}: field {key!r} is required")
    if kind is int and isinstance(value, bool):
        raise CatalogError(f"{where}: field {key!r} must be an integer, got {value!r}")
    if not isinstance(value, kind):
        raise CatalogError(f"{where}: field {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def entries_from_spec(spec: object, where: str) -> list[CatalogEntry]:
    """Validate one catalog spec (dict) and return its entry plus one per alias."""
    if not isinstance(spec, dict):
        raise CatalogError(f"{where}: each model must be a JSON object")
    unknown = set(spec) - {
        "name",
        "size",
        "family",
        "families",
        "parameter_size",
        "quantization",
        "context_length",
        "embedding_length",
        "capabilities",
        "aliases",
        "template",
        "parameters",
        "digest",
        "revision",
        "license",
    }
    if unknown:
        raise CatalogError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    raw_name = _field(spec, "name", str, where)
    try:
        name = normalize(raw_name)
    except InvalidModelName as exc:
        raise CatalogError(f"{where}: {exc}") from None
    where = f"{where} ({name})"
    size = _field(spec, "size", int, where)
    if size <= 0:
        raise CatalogError(f"{where}: field 'size' must be a positive number of bytes")
    family = _field(spec, "family", str, where, "llama")
    families = _field(spec, "families", list, where, [family])
    parameter_size = _field(spec, "parameter_size", str, where, f"{size / 0.6e9:.1f}B")
    context_length = _field(spec, "context_length", int, where, 8192)
    embedding_length = _field(spec, "embedding_length", int, where, 4096)
    if context_length <= 0 or embedding_length <= 0:
        raise CatalogError(f"{where}: context_length and embedding_length must be positive")
    capabilities = _field(spec, "capabilities", list, where, ["completion"])
    for cap in capabilities:
        if cap not in CAPABILITIES:
            raise CatalogError(
                f"{where}: unknown capability {cap!r} (known: {', '.join(CAPABILITIES)})"
            )
    aliases = _field(spec, "aliases", list, where, [])
    revision = _field(spec, "revision", str, where, "")
    digest = _field(spec, "digest", str, where, name_digest(name, revision)).lower()
    if digest.startswith("sha256:"):
        digest = digest[len("sha256:") :]
    if not _HEX64.match(digest):
        raise CatalogError(f"{where}: field 'digest' must be 64 hex digits")
    entry = CatalogEntry(
        name=name,
        size=size,
        family=family,
        families=tuple(str(f) for f in families),
        parameter_size=parameter_size,
        quantization=_field(spec, "quantization", str, where, "Q4_K_M"),
        context_length=context_length,
        embedding_length=embedding_length,
        capabilities=tuple(capabilities),
        template=_field(spec, "template", str, where, _LLAMA_TEMPLATE),
        parameters=_field(spec, "parameters", str, where, ""),
        digest=digest,
        license=_field(spec, "license", str, where, CatalogEntry.license),
    )
    result = [entry]
    for alias in aliases:
        try:
            result.append(entry.renamed(normalize(alias)))
        except InvalidModelName as exc:
            raise CatalogError(f"{where}: alias: {exc}") from None
    return result


def builtin_catalog() -> Catalog:
    catalog = Catalog()
    for index, spec in enumerate(BUILTIN_SPECS):
        for entry in entries_from_spec(spec, f"built-in model #{index}"):
            catalog.entries[entry.name] = entry
    return catalog


def catalog_from_json(text: str, source: str, base: Catalog | None = None) -> Catalog:
    """Apply a catalog file: `{"replace": bool, "models": [...]}` or a bare list of models."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CatalogError(f"{source}: not valid JSON: {exc}") from None
    replace = False
    if isinstance(data, dict):
        unknown = set(data) - {"replace", "models"}
        if unknown:
            raise CatalogError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}")
        replace = data.get("replace", False)
        if not isinstance(replace, bool):
            raise CatalogError(f"{source}: 'replace' must be true or false")
        models = data.get("models")
    else:
        models = data
    if not isinstance(models, list):
        raise CatalogError(f"{source}: expected a list of models (or {{'models': [...]}})")
    catalog = Catalog() if replace or base is None else Catalog(dict(base.entries))
    for index, spec in enumerate(models):
        for entry in entries_from_spec(spec, f"{source}: model #{index}"):
            catalog.entries[entry.name] = entry
    return catalog


def load_catalog(path: str | None) -> Catalog:
    """The built-in catalog, extended/replaced by the JSON file at `path` when given."""
    base = builtin_catalog()
    if not path:
        return base
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise CatalogError(f"cannot read catalog file {path}: {exc.strerror}") from None
    return catalog_from_json(text, path, base)
