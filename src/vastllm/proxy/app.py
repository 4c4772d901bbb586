"""``create_app``: the proxy's ASGI application, wired from its parts.

- ``asgi.py``: the small framework (dispatch, errors, access log, lifespan);
- ``messages.py``: ``/v1/messages`` and ``count_tokens``; ``models.py``: model names and
  ``/v1/models``; ``health.py``: ``/``, ``/health*``, ``/metrics``;
- ``backend.py``: the model server (Ollama) behind a Protocol; ``cache.py`` + ``resp.py``: Redis.

Nothing is created at import time, and no connection before the ASGI lifespan (or ``startup``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from vastllm.proxy.asgi import Router
from vastllm.proxy.backend import Backend, OllamaBackend
from vastllm.proxy.cache import AnswerCache
from vastllm.proxy.config import Settings
from vastllm.proxy.context import Context
from vastllm.proxy.health import health_report, health_routes
from vastllm.proxy.messages import MessageRoutes
from vastllm.proxy.models import ModelCatalog, model_routes
from vastllm.proxy.resp import RespClient


class ProxyApp(Router):
    """The ASGI app. ``context`` holds what the routes share, ``models`` the model catalog."""

    def __init__(
        self, settings: Settings, *, backend: Backend | None = None, redis_client: Any = None
    ) -> None:
        self.settings = settings
        self.context = Context(
            settings, backend if backend is not None else OllamaBackend.from_settings(settings)
        )
        self.models = ModelCatalog(settings, self.context.backend)
        self._redis_client = redis_client
        self._window_check: asyncio.Task[int | None] | None = None
        super().__init__(
            [
                *MessageRoutes(self.context, self.models).routes(),
                *model_routes(self.context, self.models),
                *health_routes(self.context),
            ],
            self.context.metrics,
        )

    @property
    def backend(self) -> Backend:
        return self.context.backend

    @property
    def cache(self) -> AnswerCache | None:
        return self.context.cache

    async def startup(self) -> None:
        settings = self.settings
        await self.context.backend.start()
        # The model's longest context, checked against VASTLLM_CONTEXT_WINDOW (a warning in the
        # log when smaller); in the background: Ollama may not be up yet.
        self._window_check = asyncio.get_running_loop().create_task(
            self.context.window.learn(self.context.backend, settings.model)
        )
        if settings.cache_enabled:
            client = self._redis_client
            if client is None:
                client = RespClient(settings.redis_url, connect_timeout=0.5, timeout=1.0)
            self.context.cache = AnswerCache(
                client, settings.cache_ttl, max_entry_bytes=settings.cache_max_entry_bytes
            )

    async def shutdown(self) -> None:
        if self._window_check is not None and not self._window_check.done():
            self._window_check.cancel()
        await self.context.backend.close()
        if self.context.cache is not None:
            await self.context.cache.close()

    async def health_report(self) -> dict[str, Any]:
        return await health_report(self.context)


def create_app(
    settings: Settings, *, backend: Backend | None = None, redis_client: Any = None
) -> ProxyApp:
    """The ASGI app for ``settings``. ``backend`` replaces the Ollama client (a test double, or
    another implementation of ``backend.Backend``); ``redis_client`` replaces the Redis client
    (anything with ``get``, ``set(key, value, ex=)``, ``ping`` and ``aclose``). Both are opened
    and closed by the ASGI lifespan (or ``startup``/``shutdown``)."""
    return ProxyApp(settings, backend=backend, redis_client=redis_client)
