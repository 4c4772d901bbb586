"""The Ollama lab double as a process: build the state, listen, serve until SIGTERM/SIGINT.

Thin wiring of ``state`` (the in-memory server state), ``wire`` (HTTP parsing, JSON and NDJSON
answers) and ``handlers`` (the endpoints).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any, TextIO

from .catalog import CatalogError
from .config import ConfigError, Settings
from .handlers import Handler
from .state import LabOllama, build_app
from .wire import LabServer

BANNER = (
    "vastllm LAB DOUBLE of Ollama: an emulator for tests and the lab, NOT Ollama (no model runs)"
)


def _watch_parent(app: LabOllama, server: LabServer) -> None:
    """Stop when the process that started us is gone (a test run killed with SIGKILL)."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    app.info(f"parent process {parent} exited: stopping the lab double")
    server.shutdown()


def serve(settings: Settings, log: TextIO = sys.stderr) -> int:
    """Run the lab double until SIGTERM/SIGINT; return the exit code."""
    log.write(f"{BANNER} -- version {settings.version}\n")
    log.flush()
    try:
        app = build_app(settings, log)
    except (CatalogError, ConfigError) as exc:
        log.write(f"Error: {exc}\n")
        return 1
    app.info("server config", env=settings.server_config())
    if settings.faults.get("crash"):
        app.info("crash fault set: the lab double exits now with code 1")
        return 1
    try:
        server = LabServer((settings.host, settings.port), app, Handler)
    except OSError as exc:
        log.write(f"Error: listen tcp {settings.host}:{settings.port}: bind: {exc.strerror}\n")
        return 1
    address = server.server_address
    host = address[0].decode() if isinstance(address[0], bytes) else str(address[0])
    port = address[1]
    shown = f"[{host}]" if ":" in host else host
    present = ", ".join(r.name for r in app.store.list()) or "none"
    app.info(f"models present: {present}")
    app.info(f"Listening on {shown}:{port} (version {settings.version})")

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    if settings.exit_with_parent:
        threading.Thread(target=_watch_parent, args=(app, server), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    app.info("lab double stopped")
    return 0
