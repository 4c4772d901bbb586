"""Ollama model names: the name as ``/api/tags`` lists it, and the key names are compared by.

The same rule as the modules' (``plugins/module_utils``), which the proxy may not import; both
are tested against one table of cases, ``tests/data/model_names.json``:

- ``qwen3`` → ``qwen3:latest`` (a name without a tag means ``latest``);
- ``library/qwen3:8b`` and ``registry.ollama.ai/library/qwen3:8b`` → ``qwen3:8b`` (registry and
  namespace in any case; an ``http(s)://`` in front is dropped, as Ollama does);
- ``user/model`` → ``user/model:latest``; another registry keeps its host (``host:5000/ns/m:tag``);
- a name pinned by digest (``model@sha256:...``) is kept as given;
- the case is kept in the display name; the key is lower case (Ollama matches names that way).

An empty name, one with white space inside, an empty part (``user//model``) or an empty name or
tag (``qwen3:``, ``:8b``) is refused with ``ValueError``.
"""

from __future__ import annotations

DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"


def display_name(name: str) -> str:
    """The name the way Ollama's ``/api/tags`` lists it; ``ValueError`` for an invalid name."""
    text = name.strip()
    if not text:
        raise ValueError("model name is empty")
    if any(char.isspace() for char in text):
        raise ValueError(f"model name {name!r} contains white space")
    for scheme in ("https://", "http://"):
        if text[: len(scheme)].lower() == scheme:
            text = text[len(scheme) :]
            break
    parts = text.split("/")
    if not all(parts):
        raise ValueError(f"model name {name!r} has an empty part")
    if len(parts) >= 2 and parts[0].lower() == DEFAULT_REGISTRY:
        parts = parts[1:]
    if len(parts) == 2 and parts[0].lower() == DEFAULT_NAMESPACE:
        parts = parts[1:]
    last = parts[-1]
    if "@" in last:  # pinned by digest: kept as given
        return "/".join(parts)
    if ":" not in last:
        last += ":" + DEFAULT_TAG
    model, _colon, tag = last.rpartition(":")
    if not model or not tag:
        raise ValueError(f"model name {name!r} has an empty name or tag")
    parts[-1] = last
    return "/".join(parts)


def name_key(name: str) -> str:
    """The comparison key of a model name (``display_name`` in lower case); ``ValueError``
    for an invalid name."""
    return display_name(name).lower()


def key_or_none(name: str) -> str | None:
    """``name_key``, or None for a name that is not a valid model name."""
    try:
        return name_key(name)
    except ValueError:
        return None
