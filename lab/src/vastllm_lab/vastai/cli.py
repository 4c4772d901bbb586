"""`vastllm-lab vastai ...`: run the vast.ai API emulator.

  vastllm-lab vastai serve --port 8765 [--instances N] [--seed FILE] [--api-key KEY]
                           [--readonly-key KEY] [--loading-delay SECONDS] [--ssh-port PORT]

It listens on 127.0.0.1 only. Point the inventory/module at it with
``VAST_URL=http://127.0.0.1:8765`` and ``VAST_API_KEY=<--api-key>``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vastllm_lab.vastai.fixtures import generate_instances
from vastllm_lab.vastai.server import LabServer
from vastllm_lab.vastai.state import LabState


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


def load_seed(path: str) -> list[dict[str, Any]]:
    """Read a seed file: a JSON list of instance objects (or ``{"instances": [...]}``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise CliError(f"cannot read seed file {path}: {err.strerror}") from None
    except ValueError as err:
        raise CliError(f"seed file {path} is not valid JSON: {err}") from None
    if isinstance(data, dict):
        data = data.get("instances")
    if not isinstance(data, list) or not all(isinstance(r, dict) and "id" in r for r in data):
        raise CliError(f"seed file {path} must hold a JSON list of instance objects with an 'id'")
    return data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vastllm-lab vastai",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the emulated vast.ai REST API on 127.0.0.1")
    serve.add_argument("--port", type=int, default=8765, help="TCP port (0 = any free port)")
    serve.add_argument(
        "--instances", type=int, default=0, help="generate N realistic instances (1,000 = 40 pages)"
    )
    serve.add_argument("--seed", help="JSON file of instance objects to serve as-is")
    serve.add_argument("--api-key", default="lab-key", help="the accepted API key")
    serve.add_argument(
        "--readonly-key", default=None, help="a key that may read but gets 403 on writes"
    )
    serve.add_argument(
        "--loading-delay",
        type=float,
        default=2.0,
        help="seconds a new/started instance stays 'loading'",
    )
    serve.add_argument(
        "--ssh-port",
        type=int,
        default=None,
        help="host port that rented instances report for 22/tcp (on 127.0.0.1)",
    )
    serve.add_argument("--verbose", action="store_true", help="log each request line")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.instances < 0:
            raise CliError("--instances must be >= 0")
        rows = generate_instances(args.instances)
        if args.seed:
            rows.extend(load_seed(args.seed))
        state = LabState(
            api_keys=[args.api_key],
            readonly_keys=[args.readonly_key] if args.readonly_key else [],
            instances=rows,
            loading_delay=args.loading_delay,
            ssh_port=args.ssh_port,
        )
        try:
            server = LabServer(state, port=args.port, verbose=args.verbose)
        except OSError as err:
            raise CliError(f"cannot listen on 127.0.0.1:{args.port}: {err.strerror}") from None
    except CliError as err:
        sys.stderr.write(f"vastllm-lab vastai: {err}\n")
        return 2
    sys.stdout.write(f"vast.ai emulator on {server.url} ({len(state.instances)} instances)\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0
