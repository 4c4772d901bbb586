"""``vastllm-proxy`` / ``python -m vastllm.proxy``: parse settings, log one line, serve."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from vastllm.proxy.config import ConfigError, Settings, load_settings, redact_url, secrets_of


def startup_line(settings: Settings) -> str:
    """The one startup log line: where, what backend, which model, cache on/off.

    Never the key, nor a password of the Redis or Ollama URL (``user:pass@`` or
    ``?password=``)."""
    cache = f"on ({redact_url(settings.redis_url)})" if settings.cache_enabled else "off"
    auth = "required" if settings.api_key else "off"
    aliases = ", ".join(f"{pattern}->{target}" for pattern, target in settings.alias_rules)
    return (
        f"vastllm-proxy listening on http://{settings.host}:{settings.port}, "
        f"backend {redact_url(settings.ollama_url)}, model {settings.model}, "
        f"aliases [{aliases}], cache {cache}, auth {auth}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        sys.stderr.write(f"vastllm-proxy: error: {exc}\n")
        return 2

    from vastllm.proxy import logs
    from vastllm.proxy.app import create_app
    from vastllm.proxy.server import build_server, limit_heap_fragmentation

    limit_heap_fragmentation()
    logs.configure(settings.log_format, settings.log_level, secrets_of(settings))
    log = logging.getLogger("vastllm.proxy")
    log.info(startup_line(settings))
    for warning in settings.warnings:
        log.warning(warning)
    server = build_server(settings, create_app(settings))
    try:
        server.run()
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        sys.stderr.write(
            f"vastllm-proxy: error: cannot listen on {settings.host}:{settings.port}: {exc}\n"
        )
        return 1
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
