"""The context window the proxy serves, and Ollama's "prompt does not fit" errors.

``VASTLLM_CONTEXT_WINDOW`` (the ``proxy`` role writes it from ``ollama_context_length``) is the
window; a model that takes less (``/api/show`` ``<family>.context_length``) caps it. Every chat
sends it as ``options.num_ctx`` with ``truncate: false`` and ``shift: false``, so Ollama refuses a
prompt that does not fit instead of silently dropping its start; ``too_long`` turns that refusal
into Anthropic's ``prompt is too long: N tokens > M maximum`` (docs/proxy.md "The context
window").
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from vastllm.proxy.backend import Backend
from vastllm.proxy.errors import BackendBadReply, BackendError, BackendStatus, ProxyError, invalid
from vastllm.proxy.names import key_or_none

_log = logging.getLogger("vastllm.proxy.window")

RETRY_AFTER = 30.0  # seconds before asking again for a model's context length after a failure
RELEARN_AFTER = 600.0  # seconds a known context length is trusted by /health before asking again

# llama-server's error (Ollama >= 0.33 with truncate: false), inside Ollama's {"error": "..."}.
_REQUEST_EXCEEDS = re.compile(
    r"request \((\d+) tokens\) exceeds the available context size \((\d+) tokens\)"
)
# Plain-text variants (Ollama's own runner and server), without or with numbers.
_PLAIN = (
    "exceeds the available context size",
    "prompt is longer than the context length",
    "input length exceeds the context length",
    "input length exceeds maximum context length",
    "exceeds maximum context length",
    "exceed_context_size_error",
)


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def parse_overflow(detail: str) -> tuple[int | None, int | None] | None:
    """(prompt tokens, window) of an Ollama "does not fit" error (None for a number it does not
    give), or None when ``detail`` is another error."""
    text = detail.strip()
    if text.startswith("{"):
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            data = None
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            kind = error.get("type")
            message = error.get("message")
            if kind == "exceed_context_size_error" or (
                isinstance(message, str) and _REQUEST_EXCEEDS.search(message)
            ):
                return _count(error.get("n_prompt_tokens")), _count(error.get("n_ctx"))
    found = _REQUEST_EXCEEDS.search(text)
    if found:
        return int(found.group(1)), int(found.group(2))
    lowered = text.lower()
    if any(marker in lowered for marker in _PLAIN):
        return None, None
    return None


def overflow_of(exc: BackendError) -> tuple[int | None, int | None] | None:
    """``parse_overflow`` of a backend failure (an HTTP error, or an error inside the stream)."""
    if isinstance(exc, BackendStatus | BackendBadReply):
        return parse_overflow(exc.detail)
    return None


def too_long(prompt: int, window: int) -> ProxyError:
    """Anthropic's answer to a prompt over the context window."""
    return invalid(f"prompt is too long: {prompt} tokens > {window} maximum")


def overflow_numbers(
    found: tuple[int | None, int | None], window: int, estimate: int
) -> tuple[int, int]:
    """(prompt tokens, window) to report: Ollama's numbers when it gives them, else the window
    sent and the proxy's estimate (at least one token more than the window: it did not fit)."""
    prompt, limit = found
    limit = limit or window
    if prompt is None or prompt <= limit:
        prompt = max(prompt or 0, estimate, limit + 1)
    return prompt, limit


@dataclass(slots=True)
class ContextWindow:
    """The window served per model: ``VASTLLM_CONTEXT_WINDOW``, capped by what Ollama says the
    model holds (asked once per model; again after ``RETRY_AFTER`` s when Ollama did not say)."""

    configured: int
    _model_max: dict[str, int | None] = field(default_factory=dict)
    _asked_at: dict[str, float] = field(default_factory=dict)
    _logged: set[str] = field(default_factory=set)
    _learning: dict[str, asyncio.Task[int | None]] = field(default_factory=dict)

    def served(self, model: str) -> int:
        """The window for ``model`` from what is known now (no I/O)."""
        limit = self._model_max.get(model)
        return min(self.configured, limit) if limit else self.configured

    async def learn(self, backend: Backend, model: str) -> int | None:
        """Ask Ollama for the model's longest context (``/api/show``); None if it does not say."""
        try:
            limit = await backend.context_length(model)
        except BackendError:
            self._asked_at[model] = time.monotonic()
            return None
        self._model_max[model] = limit
        self._asked_at[model] = time.monotonic()
        if limit is not None and limit < self.configured:
            self._warn(
                f"VASTLLM_CONTEXT_WINDOW={self.configured} is more than model {model!r} takes "
                f"({limit} tokens, Ollama /api/show): the proxy serves {limit}"
            )
        return limit

    async def for_model(self, backend: Backend, model: str) -> int:
        """The window for ``model``, asking Ollama first if it was not asked yet."""
        known = self._model_max.get(model)
        if known is None:
            asked = self._asked_at.get(model)
            if asked is None or (
                model not in self._model_max and time.monotonic() - asked > RETRY_AFTER
            ):
                await self.learn(backend, model)
        return self.served(model)

    async def _known_or_learn(self, backend: Backend, model: str) -> int | None:
        """The model's longest context for ``/health``: asked once, then again only after
        ``RELEARN_AFTER`` s (``RETRY_AFTER`` s when Ollama did not say): an open route must not
        call ``/api/show`` on every request."""
        asked = self._asked_at.get(model)
        known = self._model_max.get(model)
        if asked is not None:
            age = time.monotonic() - asked
            if age < (RELEARN_AFTER if known is not None else RETRY_AFTER):
                return known
        task = self._learning.get(model)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self.learn(backend, model))
            self._learning[model] = task
        return await asyncio.shield(task)

    def _warn(self, message: str) -> None:
        if message not in self._logged:
            self._logged.add(message)
            _log.warning("%s", message)

    async def report(self, backend: Backend, model: str, loaded: Any) -> dict[str, Any]:
        """The ``/health`` field: served, configured, the model's maximum, the context it is
        loaded with (``/api/ps``), and warnings for a mismatch."""
        limit = await self._known_or_learn(backend, model)
        served = self.served(model)
        warnings: list[str] = []
        if limit is not None and limit < self.configured:
            warnings.append(
                f"VASTLLM_CONTEXT_WINDOW={self.configured} is more than the model takes "
                f"({limit}): {served} served"
            )
        loaded_with = None
        if isinstance(loaded, dict):
            wanted = key_or_none(model) or model
            for name, length in loaded.items():
                if (key_or_none(name) or name) == wanted:
                    loaded_with = length
        if loaded_with is not None and loaded_with != served:
            message = (
                f"Ollama has {model!r} loaded with a {loaded_with}-token context (/api/ps) but the "
                f"proxy sends num_ctx {served}: Ollama reloads the model for the proxy's requests "
                "(set OLLAMA_CONTEXT_LENGTH, the ollama role's ollama_context_length, to the same "
                "value as VASTLLM_CONTEXT_WINDOW)"
            )
            warnings.append(message)
            self._warn(message)
        return {
            "served": served,
            "configured": self.configured,
            "model_max": limit,
            "loaded": loaded_with,
            "warnings": warnings,
        }
