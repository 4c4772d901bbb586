"""Model names, normalized the way Ollama does it (pure functions).

`qwen3` means `registry.ollama.ai/library/qwen3:latest`; the short display form drops the default
registry and the `library/` namespace: `qwen3:latest`.
"""

from __future__ import annotations

import re
from typing import NamedTuple

DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_MODEL_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")
_NAMESPACE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")
_TAG_RE = re.compile(r"^[a-z0-9_][a-z0-9._-]{0,79}$")
_REGISTRY_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,252}(:[0-9]{1,5})?$")


class InvalidModelName(ValueError):
    """The text is not a valid Ollama model name."""


class ModelName(NamedTuple):
    """A fully qualified model name."""

    registry: str
    namespace: str
    model: str
    tag: str

    @property
    def display(self) -> str:
        """The name as Ollama lists it (`qwen3:0.6b`, `user/model:tag`, `host/ns/model:tag`)."""
        base = f"{self.model}:{self.tag}"
        if self.registry == DEFAULT_REGISTRY:
            if self.namespace == DEFAULT_NAMESPACE:
                return base
            return f"{self.namespace}/{base}"
        return f"{self.registry}/{self.namespace}/{base}"

    @property
    def full(self) -> str:
        """`registry.ollama.ai/library/qwen3:0.6b`."""
        return f"{self.registry}/{self.namespace}/{self.model}:{self.tag}"


def parse_name(raw: object) -> ModelName:
    """Parse and normalize a model reference; raise InvalidModelName with the reason."""
    if not isinstance(raw, str):
        raise InvalidModelName("model name must be a string")
    text = raw.strip().lower()
    if "@" in text:  # `name@sha256:...` pins a digest; the lab double ignores the pin
        text = text.split("@", 1)[0]
    if not text:
        raise InvalidModelName("model name is empty")
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        path, tag = text[:colon], text[colon + 1 :]
    else:
        path, tag = text, DEFAULT_TAG
    parts = path.split("/")
    if len(parts) == 1:
        registry, namespace, model = DEFAULT_REGISTRY, DEFAULT_NAMESPACE, parts[0]
    elif len(parts) == 2:
        registry, (namespace, model) = DEFAULT_REGISTRY, parts
    elif len(parts) == 3:
        registry, namespace, model = parts
    else:
        raise InvalidModelName(f"too many '/' in model name {raw!r}")
    if not _REGISTRY_RE.match(registry):
        raise InvalidModelName(f"invalid registry {registry!r} in model name {raw!r}")
    if not _NAMESPACE_RE.match(namespace):
        raise InvalidModelName(f"invalid namespace {namespace!r} in model name {raw!r}")
    if not _MODEL_RE.match(model):
        raise InvalidModelName(f"invalid model {model!r} in model name {raw!r}")
    if not _TAG_RE.match(tag):
        raise InvalidModelName(f"invalid tag {tag!r} in model name {raw!r}")
    return ModelName(registry, namespace, model, tag)


def normalize(raw: object) -> str:
    """The display form of a model reference (`library/Qwen3` -> `qwen3:latest`)."""
    return parse_name(raw).display
