"""Model names: which backend model a request's ``model`` means, and ``GET /v1/models``.

A name resolves, in this order, by the alias rules (``VASTLLM_MODEL_MAP`` patterns, then
``claude-*``; shell globs on the name as sent), then as a backend model: a configured one
(``VASTLLM_MODEL`` or a map target) or one Ollama lists in ``/api/tags``. Backend models are
matched by their key (``names.name_key``: ``qwen3`` is ``qwen3:latest``, ``library/`` and the
case do not matter) and resolve to the name as configured or as Ollama lists it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson

from vastllm.proxy.asgi import Call, Route, send_body
from vastllm.proxy.backend import Backend
from vastllm.proxy.config import Settings, resolve_model
from vastllm.proxy.context import Context
from vastllm.proxy.errors import BackendError, ProxyError
from vastllm.proxy.names import key_or_none

TAGS_TTL = 30.0  # seconds the list of installed models is reused
_GLOB_CHARS = frozenset("*?[")


class ModelCatalog:
    """The configured aliases and backend models, and (cached) what the backend has."""

    def __init__(self, settings: Settings, backend: Backend) -> None:
        self._settings = settings
        self._backend = backend
        configured = (settings.model, *(target for _pattern, target in settings.model_map))
        self.backend_names = frozenset(configured)
        self._configured: dict[str, str] = {}  # key -> the name as configured (first wins)
        for name in configured:
            key = key_or_none(name)
            if key is not None:
                self._configured.setdefault(key, name)
        self._installed: tuple[float, dict[str, str]] = (0.0, {})
        self._thinking: dict[str, bool] = {}

    async def installed(self) -> dict[str, str]:
        """key -> name as Ollama lists it, refreshed every ``TAGS_TTL`` seconds; the last list
        known (maybe empty) while the backend does not answer."""
        fetched_at, names = self._installed
        if time.monotonic() - fetched_at < TAGS_TTL:
            return names
        try:
            listed = await self._backend.model_names()
        except BackendError:
            return names
        names = {}
        for name in listed:
            key = key_or_none(name)
            if key is not None:
                names.setdefault(key, name)
        self._installed = (time.monotonic(), names)
        return names

    async def resolve(self, name: str) -> str:
        """The backend model for a client's model name; 404 ``not_found_error`` if none."""
        target = resolve_model(name, self._settings.alias_rules)
        if target is not None:
            return target
        if name in self.backend_names:
            return name
        key = key_or_none(name)
        if key is not None:
            configured = self._configured.get(key)
            if configured is not None:
                return configured
            listed = (await self.installed()).get(key)
            if listed is not None:
                return listed
        raise ProxyError(
            "not_found_error",
            f"model: {name!r} matches no alias and is not a model on the backend",
        )

    async def supports_thinking(self, model: str) -> bool:
        """Whether ``model`` takes Ollama's ``think`` flag (asked once per model)."""
        known = self._thinking.get(model)
        if known is not None:
            return known
        try:
            capabilities = await self._backend.capabilities(model)
        except BackendError:
            return False  # backend down or model missing: the chat call will report it
        self._thinking[model] = "thinking" in capabilities
        return self._thinking[model]

    async def listing(self) -> list[str]:
        """The aliases without wildcards, the configured backend models, the installed ones;
        each model once (by key)."""
        rules = self._settings.model_map
        aliases = [pattern for pattern, _target in rules if not _GLOB_CHARS & set(pattern)]
        models = sorted(self.backend_names) + sorted((await self.installed()).values())
        names: list[str] = []
        seen_names: set[str] = set()
        seen_keys: set[str] = set()
        for alias in aliases:
            if alias not in seen_names:
                seen_names.add(alias)
                names.append(alias)
        for name in models:
            key = key_or_none(name) or name
            if name in seen_names or key in seen_keys:
                continue
            seen_names.add(name)
            seen_keys.add(key)
            names.append(name)
        return names


def model_routes(context: Context, catalog: ModelCatalog) -> list[Route]:
    async def list_models(call: Call) -> None:
        context.auth.check(call, open_route=context.settings.open_metrics)
        created = datetime.fromtimestamp(context.started_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        data: list[dict[str, Any]] = [
            {"type": "model", "id": name, "display_name": name, "created_at": created}
            for name in await catalog.listing()
        ]
        body = {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        await send_body(call, 200, orjson.dumps(body))

    return [Route("GET", "/v1/models", "models", list_models)]
