"""Command line of the Ollama lab double: `vastllm-lab ollama ...` and the archive's `bin/ollama`.

serve                 run the lab double (settings from OLLAMA_* / VASTLLM_LAB_* variables)
--version, -v         print `ollama version is X`
list | ps             list present / loaded models of the server at OLLAMA_HOST
pull NAME | rm NAME   pull / remove a model on the server at OLLAMA_HOST
build-archive ...     build a release-like archive (see `build-archive --help`)
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from .config import ConfigError, parse_host, settings_from_env

USAGE = """\
vastllm lab double of Ollama (an emulator for tests, not Ollama)

Usage:
  ollama serve            Start the lab double (OLLAMA_HOST, OLLAMA_MODELS, ... apply)
  ollama list             List models
  ollama ps               List running models
  ollama pull MODEL       Pull a model (from the lab catalog)
  ollama rm MODEL         Remove a model
  ollama -v, --version    Show version information
  build-archive ...       (vastllm-lab only) build a release-like archive
"""


class ClientError(Exception):
    """A client command failed; the message is printed as `Error: ...`."""


def base_url(env: dict[str, str]) -> str:
    host, port = parse_host(env.get("OLLAMA_HOST", ""))
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _request(
    url: str, method: str = "GET", body: dict[str, Any] | None = None, timeout: float = 30.0
) -> Any:
    data = json.dumps(body).encode("utf-8") if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error") or exc.reason
        except ValueError:
            message = exc.reason
        raise ClientError(str(message)) from None
    except (urllib.error.URLError, OSError):
        raise ClientError("could not connect to ollama app, is it running?") from None


def _get_json(url: str, timeout: float = 30.0) -> Any:
    with _request(url, timeout=timeout) as response:
        return json.loads(response.read())


def human_size(size: int) -> str:
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


def human_ago(ts: float, now: float) -> str:
    seconds = max(0, int(now - ts))
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = seconds // length
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "Less than a minute ago"


def _parse_time(text: str) -> float:
    import datetime

    try:
        return (
            datetime.datetime.strptime(text[:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")
            .replace(tzinfo=datetime.timezone.utc)
            .timestamp()
        )
    except ValueError:
        return time.time()


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "    ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )


def cmd_list(url: str) -> str:
    data = _get_json(f"{url}/api/tags")
    now = time.time()
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    for model in data.get("models", []):
        rows.append(
            [
                model["name"],
                model["digest"][:12],
                human_size(model["size"]),
                human_ago(_parse_time(model["modified_at"]), now),
            ]
        )
    return _table(rows)


def cmd_ps(url: str) -> str:
    data = _get_json(f"{url}/api/ps")
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]]
    for model in data.get("models", []):
        rows.append(
            [
                model["name"],
                model["digest"][:12],
                human_size(model["size"]),
                "100% GPU",
                str(model.get("context_length", "")),
                model.get("expires_at", ""),
            ]
        )
    return _table(rows)


def cmd_pull(url: str, name: str, out: Any) -> None:
    with _request(f"{url}/api/pull", "POST", {"model": name}, timeout=3600) as response:
        for raw in response:
            if not raw.strip():
                continue
            event = json.loads(raw)
            if "error" in event:
                raise ClientError(event["error"])
            status = event.get("status", "")
            if "total" in event:
                done = event.get("completed", 0)
                percent = 100 * done // max(event["total"], 1)
                status = f"{status} {percent:3d}% {human_size(done)}/{human_size(event['total'])}"
            out.write(status + "\n")
            out.flush()


def cmd_rm(url: str, name: str) -> str:
    with _request(f"{url}/api/delete", "DELETE", {"model": name}):
        pass
    return f"deleted '{name}'"


def cmd_version(env: dict[str, str], client_version: str) -> int:
    try:
        data = _get_json(f"{base_url(env)}/api/version", timeout=1.0)
        server_version = str(data.get("version", ""))
    except (ClientError, ValueError, ConfigError):
        server_version = ""
    if not server_version:
        sys.stderr.write("Warning: could not connect to a running Ollama instance\n")
        sys.stderr.write(f"Warning: client version is {client_version}\n")
        sys.stdout.write(f"ollama version is {client_version}\n")
        return 0
    sys.stdout.write(f"ollama version is {server_version}\n")
    if server_version != client_version:
        sys.stderr.write(f"Warning: client version is {client_version}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    if not args or args[0] in ("help", "-h", "--help"):
        (sys.stdout if args else sys.stderr).write(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    try:
        if command in ("--version", "-v", "version"):
            from ._version import VERSION

            return cmd_version(env, env.get("VASTLLM_LAB_VERSION") or VERSION)
        if command == "serve":
            if rest:
                sys.stderr.write(f"Error: serve takes no arguments, got {' '.join(rest)}\n")
                return 2
            from .server import serve

            return serve(settings_from_env(env))
        if command == "build-archive":
            from .archive import main as archive_main

            return archive_main(rest)
        if command in ("list", "ls") and not rest:
            print(cmd_list(base_url(env)))
            return 0
        if command == "ps" and not rest:
            print(cmd_ps(base_url(env)))
            return 0
        if command == "pull" and len(rest) == 1:
            cmd_pull(base_url(env), rest[0], sys.stdout)
            return 0
        if command in ("rm", "delete") and rest:
            for name in rest:
                print(cmd_rm(base_url(env), name))
            return 0
    except ConfigError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 1
    except ClientError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    sys.stderr.write(f"Error: unknown command or arguments: {' '.join(args)}\n\n{USAGE}")
    return 2
