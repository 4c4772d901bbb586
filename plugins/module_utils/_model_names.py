# -*- coding: utf-8 -*-
# Copyright: vastllm contributors
# Apache-2.0
"""The one model-name rule of vastllm's modules: how Ollama spells and compares a model name.

* ``display_name``: the name as Ollama's ``/api/tags`` lists it, case kept
  (``qwen3`` -> ``qwen3:latest``; ``library/qwen3:8b`` and ``registry.ollama.ai/library/qwen3:8b``
  -> ``qwen3:8b``; ``user/model`` -> ``user/model:latest``; another registry keeps its host).
  The default registry and the ``library`` namespace are recognised in any case, as Ollama
  compares them case-insensitively; an ``http(s)://`` in front is dropped, as Ollama does.
* ``name_key``: the comparison key (Ollama matches names case-insensitively).

The cases every normalizer in vastllm must agree on are in ``tests/data/model_names.json``
(the proxy, which may not import Ansible code, has its own copy of the rule, tested against the
same table). Python 3.8 compatible: module_utils also run on managed hosts.
"""

from __future__ import annotations

DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"


class ModelNameError(ValueError):
    """The string is not a model name Ollama would accept; the message says why."""


def display_name(name: str) -> str:
    """The name as ``/api/tags`` lists it; raises ``ModelNameError`` for a malformed name."""
    text = name.strip()
    if not text:
        raise ModelNameError("model name is empty")
    if any(ch.isspace() for ch in text):
        raise ModelNameError("model name %r contains whitespace" % name)
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
            break
    parts = text.split("/")
    if any(not part for part in parts):
        raise ModelNameError("model name %r has an empty part" % name)
    if len(parts) >= 2 and parts[0].lower() == DEFAULT_REGISTRY:
        parts = parts[1:]
    if len(parts) == 2 and parts[0].lower() == DEFAULT_NAMESPACE:
        parts = parts[1:]
    last = parts[-1]
    if "@" in last:
        # pinned by digest (model@sha256:...): kept as given
        return "/".join(parts)
    if ":" not in last:
        last += ":" + DEFAULT_TAG
    model, _sep, tag = last.rpartition(":")
    if not model or not tag:
        raise ModelNameError("model name %r has an empty name or tag" % name)
    parts[-1] = last
    return "/".join(parts)


def name_key(name: str) -> str:
    """Comparison key: the display name, lower-cased (Ollama ignores case)."""
    return display_name(name).lower()


def same_model(a: str, b: str) -> bool:
    """Whether two names mean the same model (both must be well-formed)."""
    return name_key(a) == name_key(b)
