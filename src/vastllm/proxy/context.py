"""What the route modules share: settings, metrics, the backend, the key check and the cache."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from vastllm.proxy.auth import KeyCheck
from vastllm.proxy.backend import Backend
from vastllm.proxy.cache import AnswerCache
from vastllm.proxy.config import Settings
from vastllm.proxy.metrics import Metrics
from vastllm.proxy.window import ContextWindow


@dataclass(slots=True)
class Context:
    settings: Settings
    backend: Backend
    metrics: Metrics = field(default_factory=Metrics)
    started_at: float = field(default_factory=time.time)
    auth: KeyCheck = field(init=False)
    cache: AnswerCache | None = None  # opened by the ASGI lifespan when the cache is on
    window: ContextWindow = field(init=False)  # the context window served (window.py)
    health_probes: Any = None  # the last round of /health probes (health.py), shared briefly

    def __post_init__(self) -> None:
        self.auth = KeyCheck(self.settings.api_key)
        self.window = ContextWindow(self.settings.context_window)
