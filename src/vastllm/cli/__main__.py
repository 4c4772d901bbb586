"""``vastllm``: from a vast.ai key to Claude Code in one command (docs/cli.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vastllm.cli.config import (
    CliError,
    collection_import_path,
    find_repo,
    load_settings,
    paths_from_env,
)

DESCRIPTION = """\
Rent a vast.ai GPU (only under a price cap), serve a coding model behind the vastllm proxy,
keep an SSH tunnel to it and start Claude Code against it:

  vastllm up --max-price 0.60      # rent or find, provision, verify, tunnel, env file
  source ~/.config/vastllm/vastllm-1.env && claude
  vastllm status                   # state, $/h, spend, health, cache, idle timer, tunnel
  vastllm down                     # stop (disk kept); --destroy deletes it

Settings: ~/.config/vastllm/config.toml (or $VASTLLM_HOME/config.toml); flags win.
vast.ai key: VAST_API_KEY or the vastai CLI's key file. Run logs: ~/.local/state/vastllm/runs/.
"""


def _label(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label", help="the instance's label (default: setting `label`, vastllm-1)")


def _ports(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--local-port",
        type=int,
        metavar="PORT",
        help="local port of the tunnel to the proxy (default 8000)",
    )
    p.add_argument(
        "--ollama-port",
        type=int,
        metavar="PORT",
        help="also forward this local port to Ollama's API on the instance (off: 0)",
    )


def _extra(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        metavar="VARS",
        help="extra variables for the playbooks, as for ansible-playbook "
        "(KEY=VALUE or @FILE; repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout (for scripts)"
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show Ansible's raw output instead of the progress lines",
    )
    parser = argparse.ArgumentParser(
        prog="vastllm",
        description=DESCRIPTION,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up",
        parents=[common],
        help="rent (under a price cap) or find the instance, provision, "
        "verify, open the tunnel, write Claude Code's environment",
        description="Find the instance by label, or rent the cheapest offer whose TOTAL $/h "
        "(GPU + disk + bandwidth estimate) is within --max-price; wait for SSH; run site.yml and "
        "verify.yml; open the kept tunnel; write the Claude Code env file. Safe to run again.",
    )
    _label(up)
    up.add_argument(
        "--max-price",
        type=float,
        metavar="DOLLARS_PER_HOUR",
        help="price cap for a rent: the most the instance may cost in total per hour "
        "(required for a rent unless `max_price` is set)",
    )
    up.add_argument(
        "--gpu",
        action="append",
        metavar="NAME",
        help="acceptable GPU model, e.g. RTX_4090 (repeatable; default RTX_4090, "
        "RTX_3090, RTX_A6000)",
    )
    up.add_argument("--num-gpus", type=int, metavar="N", help="number of GPUs (default 1)")
    up.add_argument("--min-vram", type=float, metavar="GB", help="minimum RAM per GPU (default 24)")
    up.add_argument("--disk", type=float, metavar="GB", help="disk to allocate (default 80)")
    up.add_argument(
        "--min-reliability",
        type=float,
        metavar="R",
        help="minimum machine reliability, 0..1 (default 0.97)",
    )
    up.add_argument("--region", metavar="CC", help="country code (US, DE) or geolocation glob")
    up.add_argument("--image", help="Docker image to rent with")
    up.add_argument(
        "--playbook",
        metavar="PATH",
        help="stack playbook, relative to the checkout (default site.yml; the local "
        "lab host: playbooks/lab.yml)",
    )
    _ports(up)
    _extra(up)

    st = sub.add_parser(
        "status",
        parents=[common],
        help="state, GPU, $/h, spend, proxy health, cache, idle timer, tunnel",
        description="One row per instance whose label starts with the prefix, "
        "a spending line for them all and a warning for any that runs unused.",
    )
    st.add_argument("--prefix", help="label prefix (default: setting `label_prefix`, vastllm)")
    st.add_argument(
        "--no-ssh",
        action="store_true",
        help="do not ask the instances over SSH (no monitor data, no context window)",
    )

    co = sub.add_parser(
        "connect",
        parents=[common],
        help="open (or keep) the SSH tunnel",
        description="Start a detached keeper that holds `ssh -N -L` to the "
        "proxy, reconnecting when the link drops; idempotent. Ends by calling "
        "/health through it.",
    )
    _label(co)
    _ports(co)

    dc = sub.add_parser("disconnect", parents=[common], help="close the tunnel")
    _label(dc)

    dn = sub.add_parser(
        "down",
        parents=[common],
        help="stop the instance (disk kept) or destroy it; closes the tunnel",
    )
    _label(dn)
    dn.add_argument(
        "--destroy",
        action="store_true",
        help="destroy the instance and its disk (asks for confirmation)",
    )
    dn.add_argument("--yes", action="store_true", help="do not ask (scripts)")

    dg = sub.add_parser(
        "diagnose", parents=[common], help="run playbooks/diagnose.yml and print the findings"
    )
    _label(dg)
    _extra(dg)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from vastllm.cli.commands import COMMANDS, Context, environ_home

    out = sys.stdout
    try:
        paths = paths_from_env(os.environ, environ_home())
        settings = load_settings(paths)
        repo = find_repo(os.environ, Path.cwd(), Path(__file__))
        collection_import_path(repo)
        ctx = Context(paths=paths, settings=settings, repo=repo, verbose=args.verbose,
                      json=args.json)  # fmt: skip
        outcome = COMMANDS[args.command](ctx, args)
    except CliError as err:
        if args.json:
            out.write(
                json.dumps({"ok": False, "command": args.command, "error": err.message}) + "\n"
            )
        else:
            print(f"vastllm {args.command}: {err.message}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print(f"vastllm {args.command}: interrupted", file=sys.stderr)
        return 130
    if args.json:
        doc = {"ok": outcome.code == 0, "command": args.command, "summary": outcome.summary,
               **outcome.data}  # fmt: skip
        out.write(json.dumps(doc, default=str) + "\n")
    else:
        for line in outcome.tail if args.command == "status" else []:
            out.write(line + "\n")
        out.write(outcome.summary + "\n")
        for line in outcome.tail if args.command != "status" else []:
            out.write(line + "\n")
    return outcome.code


if __name__ == "__main__":
    raise SystemExit(main())
