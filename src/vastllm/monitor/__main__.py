"""``vastllm-monitor`` / ``python -m vastllm.monitor``: run | check | report | config.

Exit codes: 0 done; 1 ``check``/``report --fail-down``: the last round was not up; 2 bad usage or
configuration; 3 another ``run`` holds the state directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from vastllm import __version__
from vastllm.monitor.config import ConfigError, MonitorConfig, load_config, settings_help
from vastllm.monitor.daemon import Monitor, MonitorBusy
from vastllm.monitor.policy import HOUR, parse_duration
from vastllm.monitor.records import RecordLog
from vastllm.monitor.report import build_report, render_text

logger = logging.getLogger("vastllm.monitor")


def _parser() -> argparse.ArgumentParser:
    variables = "\n".join(f"  {name} (default {default})" for name, default in settings_help())
    parser = argparse.ArgumentParser(
        prog="vastllm-monitor",
        description="On-host monitor of a vastllm GPU host: health history, restarts, idle stop.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Settings (JSON config file keys are the names in lower case without the prefix;"
        " variables win over the file):\n  VASTLLM_MONITOR_CONFIG (default "
        "/etc/vastllm/monitor.json when it exists)\n" + variables,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", help="JSON config file (else VASTLLM_MONITOR_CONFIG)")
    parser.add_argument("--log-level", default="INFO", help="log level on stderr (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="check every interval, record, restart, stop when idle")
    run.add_argument("--once", action="store_true", help="one round, print its record, exit")
    run.add_argument("--rounds", type=int, help="stop after this many rounds (tests)")

    sub.add_parser(
        "check",
        help="one round, printed as JSON: nothing recorded, restarted or stopped"
        " (exit 1 when not up)",
    )

    report = sub.add_parser("report", help="uptime, restarts, last round, idle timer")
    report.add_argument(
        "--window", default="24h", help="uptime window: 90s, 15m, 24h, 7d (default 24h)"
    )
    report.add_argument("--json", action="store_true", help="JSON for scripts (verify, diagnose)")
    report.add_argument("--state-dir", help="record directory (default: the configured one)")
    report.add_argument(
        "--fail-down", action="store_true", help="exit 1 when the last round was not up"
    )

    sub.add_parser("config", help="print the effective configuration as JSON")
    return parser


def _handle_signals(monitor: Monitor) -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: stopping after this round", signum)
        monitor.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _dump(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)


def _run(config: MonitorConfig, args: argparse.Namespace) -> int:
    monitor = Monitor(config)
    try:
        monitor.lock()
    except MonitorBusy as exc:
        sys.stderr.write(f"vastllm-monitor: {exc}\n")
        return 3
    try:
        if args.once:
            record = monitor.run_round()
            sys.stdout.write(_dump(record) + "\n")
            return 0
        if args.rounds is not None and args.rounds < 1:
            sys.stderr.write("vastllm-monitor: error: --rounds must be >= 1\n")
            return 2
        _handle_signals(monitor)
        logger.info(
            "vastllm-monitor %s: every %gs into %s (config: %s)",
            __version__,
            config.interval,
            config.state_dir,
            config.source,
        )
        return monitor.run(args.rounds)
    finally:
        monitor.unlock()


def _report(config: MonitorConfig, args: argparse.Namespace) -> int:
    try:
        window = parse_duration(args.window)
    except ValueError as exc:
        sys.stderr.write(f"vastllm-monitor: error: --window: {exc}\n")
        return 2
    state_dir = args.state_dir or config.state_dir
    log = RecordLog(state_dir, config.max_bytes, config.max_files)
    now = time.time()
    records = list(log.read(since=now - max(window, HOUR)))
    last = next((r for r in reversed(records) if r.get("kind") == "round"), None) or log.last()
    report = build_report(
        records,
        last,
        now=now,
        window=window,
        interval=config.interval,
        state_dir=state_dir,
        idle_stop_minutes=config.idle_stop_minutes,
    )
    sys.stdout.write(_dump(report) + "\n" if args.json else render_text(report))
    if args.fail_down and not (last or {}).get("up"):
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s vastllm-monitor %(levelname)s %(message)s",
    )
    try:
        config, warnings = load_config(config_file=args.config)
    except ConfigError as exc:
        sys.stderr.write(f"vastllm-monitor: error: {exc}\n")
        return 2
    for warning in warnings:
        logger.warning("%s", warning)
    if args.command == "run":
        return _run(config, args)
    if args.command == "check":
        record = Monitor(config, act=False).run_round()
        sys.stdout.write(_dump(record) + "\n")
        return 0 if record.get("up") else 1
    if args.command == "report":
        return _report(config, args)
    sys.stdout.write(_dump(config.public()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
