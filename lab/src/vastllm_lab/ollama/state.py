"""The state of the Ollama lab double: catalog, store, loaded models, faults, stats (no HTTP).

Thread-safe: the HTTP handlers (``handlers.py``) call it from one thread per connection.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

from . import faults as faults_mod
from .catalog import Catalog, load_catalog
from .config import FOREVER, ConfigError, Settings
from .names import InvalidModelName, normalize
from .prompt import Slot, choose_slot
from .store import ModelRecord, ModelStore, build_manifest

_FOREVER_SECONDS = 292 * 365.25 * 86400  # Go's maximum duration, about 292 years


def os_error_text(action: str, exc: OSError, fallback_path: str) -> str:
    """Go-like `mkdir /path: permission denied` text of an OSError."""
    reason = (exc.strerror or str(exc)).lower()
    return f"{action} {exc.filename or fallback_path}: {reason}"


class Loaded:
    __slots__ = ("context_length", "expires_at", "loaded_at")

    def __init__(self, expires_at: float, context_length: int) -> None:
        self.expires_at = expires_at
        self.context_length = context_length
        self.loaded_at = time.time()


class LabOllama:
    """The state of the lab double: catalog, store, loaded models, faults, stats."""

    def __init__(
        self, settings: Settings, catalog: Catalog, store: ModelStore, log: TextIO
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self._log = log
        self._log_lock = threading.Lock()
        self._lock = threading.Lock()
        self._faults: dict[str, Any] = dict(settings.faults)
        self._stats: dict[str, int] = {}
        self._loaded: dict[str, Loaded] = {}
        self._slots: dict[str, list[Slot]] = {}  # per loaded model: OLLAMA_NUM_PARALLEL slots
        self._clock = 0

    # -- logging, stats, faults -------------------------------------------------------------
    def log(self, line: str) -> None:
        with self._log_lock:
            try:
                self._log.write(line + "\n")
                self._log.flush()
            except (OSError, ValueError):
                pass

    def info(self, message: str, **fields: str) -> None:
        stamp = datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")
        extra = "".join(f" {key}={json.dumps(value)}" for key, value in fields.items())
        self.log(f"time={stamp} level=INFO source=lab msg={json.dumps(message)}{extra}")

    def count(self, path: str) -> None:
        with self._lock:
            self._stats[path] = self._stats.get(path, 0) + 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            requests = dict(self._stats)
            slots = {
                name: [
                    {
                        "slot": index,
                        "requests": slot.requests,
                        "hits": slot.hits,
                        "reused_tokens": slot.reused_tokens,
                        "evaluated_tokens": slot.evaluated_tokens,
                        "cached_tokens": len(slot.tokens),
                        "work_ns": slot.work_ns,
                    }
                    for index, slot in enumerate(model_slots)
                ]
                for name, model_slots in sorted(self._slots.items())
            }
        return {"requests": requests, "total": sum(requests.values()), "slots": slots}

    def reset_stats(self) -> None:
        """Zero the counters (requests per path, slot counters); cached prompts stay."""
        with self._lock:
            self._stats.clear()
            for model_slots in self._slots.values():
                for slot in model_slots:
                    slot.requests = slot.hits = slot.reused_tokens = slot.evaluated_tokens = 0
                    slot.work_ns = 0

    # -- prompt cache (slots) ----------------------------------------------------------------
    def acquire_slot(self, name: str, tokens: list[str]) -> tuple[int, int]:
        """Take a slot of a loaded model for a prompt; return (slot index, reused prefix)."""
        with self._lock:
            slots = self._slots.get(name)
            if slots is None:
                slots = [Slot([]) for _ in range(self.settings.num_parallel)]
                self._slots[name] = slots
            index, prefix = choose_slot(slots, tokens)
            slot = slots[index]
            self._clock += 1
            slot.busy = True
            slot.last_used = self._clock
            slot.requests += 1
            slot.hits += 1 if prefix else 0
            slot.reused_tokens += prefix
            slot.evaluated_tokens += len(tokens) - prefix
            slot.tokens = list(tokens[:prefix])  # what survives if the request dies
            return index, prefix

    def add_work(self, name: str, index: int, ns: int) -> None:
        """Count the double's own work on a request (see `Slot.work_ns`) to its slot."""
        with self._lock:
            slots = self._slots.get(name)
            if slots is not None and index < len(slots):
                slots[index].work_ns += max(ns, 0)

    def release_slot(self, name: str, index: int, tokens: list[str]) -> None:
        """The request is done: the slot caches `tokens` (prompt + generated text)."""
        with self._lock:
            slots = self._slots.get(name)
            if slots is not None and index < len(slots):
                slots[index].busy = False
                slots[index].tokens = list(tokens)

    def faults(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._faults)

    def fault(self, key: str) -> Any:
        return self._faults.get(key)

    def update_faults(self, update: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._faults = faults_mod.merge(self._faults, update)
            return dict(self._faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = {}

    # -- models ------------------------------------------------------------------------------
    def lookup(self, raw: Any) -> ModelRecord | None:
        try:
            return self.store.get(normalize(raw))
        except InvalidModelName:
            return None

    def _prune(self, now: float) -> None:
        expired = [n for n, m in self._loaded.items() if m.expires_at <= now]
        for name in expired:
            del self._loaded[name]
            self._slots.pop(name, None)

    def loaded(self) -> list[tuple[str, Loaded]]:
        with self._lock:
            self._prune(time.time())
            return sorted(self._loaded.items(), key=lambda item: -item[1].loaded_at)

    def load(self, record: ModelRecord, options: Any) -> int:
        """Load a model (if not loaded); return the load duration in ns."""
        now = time.time()
        with self._lock:
            self._prune(now)
            present = record.name in self._loaded
        if present:
            return 0
        started = time.perf_counter()
        delay = self.fault("load_delay")
        if delay:
            time.sleep(delay)
        num_ctx = options.get("num_ctx") if isinstance(options, dict) else None
        context = num_ctx if isinstance(num_ctx, int) and num_ctx > 0 else None
        context = min(context or self.settings.context_length, record.entry.context_length)
        default = self.settings.keep_alive
        seconds = _FOREVER_SECONDS if default == FOREVER else max(default, 1.0)
        with self._lock:  # the request's own keep_alive is applied by keep() when it is done
            if record.name not in self._loaded:
                self._loaded[record.name] = Loaded(now + seconds, context)
        return max(int((time.perf_counter() - started) * 1e9), 1000)

    def keep(self, record: ModelRecord, keep_alive: float) -> None:
        """Apply the request's keep-alive once the request is done (0 unloads)."""
        with self._lock:
            if keep_alive == 0:
                self._loaded.pop(record.name, None)
                self._slots.pop(record.name, None)
                return
            loaded = self._loaded.get(record.name)
            if loaded is not None:
                seconds = _FOREVER_SECONDS if keep_alive == FOREVER else keep_alive
                loaded.expires_at = time.time() + seconds

    def unload(self, name: str) -> None:
        with self._lock:
            self._loaded.pop(name, None)
            self._slots.pop(name, None)

    # -- pull ------------------------------------------------------------------------------
    def pull_events(self, name: str) -> Iterator[dict[str, Any]]:
        """The progress lines of a pull; an `{"error": ...}` line ends a failed pull."""
        yield {"status": "pulling manifest"}
        faults = self.faults()
        delay = float(faults.get("chunk_delay") or 0)
        entry = None if name in faults.get("unknown_model", []) else self.catalog.resolve(name)
        if entry is None:
            yield {"error": "pull model manifest: file does not exist"}
            return
        entry = entry.renamed(name)
        _manifest, blobs = build_manifest(entry)
        existing = self.store.get(name)
        fresh = existing is not None and existing.blobs == tuple(b.digest for b in blobs)
        layers = blobs[1:]  # the config blob is not reported, like in Ollama
        if not fresh:
            try:
                self.store.check_writable()
            except OSError as exc:
                yield {"error": os_error_text("mkdir", exc, self.store.blobs_dir)}
                return
        model = layers[0]
        steps = 1 if fresh else 10
        pause = 0.0 if fresh else model.size / self.settings.pull_rate / steps
        fail_at = 0
        if not fresh and (name in faults.get("pull_fail_after", []) or faults.get("disk_full")):
            fail_at = steps // 2 + 1
        status = f"pulling {model.digest[:12]}"
        digest = f"sha256:{model.digest}"
        if not fresh:
            yield {"status": status, "digest": digest, "total": model.size, "completed": 0}
        for step in range(1, steps + 1):
            if pause or delay:
                time.sleep(pause + delay)
            if step == fail_at:
                if name in faults.get("pull_fail_after", []):
                    yield {
                        "error": f'max retries exceeded: Get "https://{entry_host(name)}/v2/'
                        f'{entry_repo(name)}/blobs/{digest}": read: connection reset by peer'
                    }
                else:
                    path = os.path.join(self.store.blobs_dir, f"sha256-{model.digest}-partial")
                    yield {"error": f"write {path}: no space left on device"}
                return
            completed = model.size * step // steps
            yield {"status": status, "digest": digest, "total": model.size, "completed": completed}
        for blob in layers[1:]:
            if delay:
                time.sleep(delay)
            yield {
                "status": f"pulling {blob.digest[:12]}",
                "digest": f"sha256:{blob.digest}",
                "total": blob.size,
                "completed": blob.size,
            }
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        if not fresh:
            try:
                self.store.write(entry)
            except OSError as exc:
                yield {"error": os_error_text("write", exc, self.store.models_dir)}
                return
        yield {"status": "success"}


def entry_host(name: str) -> str:
    parts = name.split("/")
    return parts[0] if len(parts) == 3 else "registry.ollama.ai"


def entry_repo(name: str) -> str:
    path = name.rsplit(":", 1)[0]
    parts = path.split("/")
    if len(parts) == 1:
        return f"library/{path}"
    return "/".join(parts[-2:])


def build_app(settings: Settings, log: TextIO) -> LabOllama:
    """Catalog + store (+ preloads) for the settings; raises CatalogError/ConfigError."""
    catalog = load_catalog(settings.catalog_path)
    store = ModelStore(settings.models_dir)
    app = LabOllama(settings, catalog, store, log)
    for warning in store.load():
        app.info(warning)
    for raw in settings.preload:
        entry = catalog.resolve(raw)
        if entry is None:
            raise ConfigError(f"VASTLLM_LAB_PRELOAD: {raw!r} is not in the lab catalog")
        name = normalize(raw)
        if store.get(name) is None:  # present on disk already: keep that copy (and digest)
            try:
                store.write(entry.renamed(name))
            except OSError as exc:
                app.info(f"preload of {name} kept in memory only: {exc}")
                store.add_memory(entry.renamed(name))
    return app
