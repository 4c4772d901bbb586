"""Benchmark: `ansible-inventory --list` of 1,000 vast.ai instances (40 pages of 25).

Compares, in one run on the same machine:
  static   - ansible-inventory on an equivalent static YAML inventory (same hosts, hostvars
             and groups, written from the same instances);
  uncached - the vastai plugin with --flush-cache (40 API pages from the emulator);
  cached   - the vastai plugin answering from its jsonfile cache (no API call).

Targets (issue 4): cached <= 1.5x static, uncached <= 3x static.

    .venv/bin/python benchmarks/inventory_bench.py [--instances 1000] [--repeat 5] [--json]

The emulator runs in this process on 127.0.0.1; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The checkout is the collection vastllm.stack, linked there by scripts/setup.sh.
sys.path.insert(0, str(REPO / ".cache" / "collections"))

from ansible_collections.vastllm.stack.plugins.module_utils import vastai_hosts as hosts  # noqa: E402

from vastllm_lab.testing import ansible_env  # noqa: E402
from vastllm_lab.vastai.fixtures import generate_instances  # noqa: E402
from vastllm_lab.vastai.server import LabServer  # noqa: E402
from vastllm_lab.vastai.state import LabState  # noqa: E402


def static_inventory(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The same hosts, hostvars and groups as the plugin builds, as a YAML inventory."""
    vastai: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {"vastllm": {"hosts": {}}}
    for row in rows:
        if not hosts.instance_matches(row, ["running"], [], []):
            continue
        name = str(row.get("label") or row["id"])
        hostvars = hosts.instance_hostvars(row, "vastai_", "auto")
        vastai[name] = hostvars
        groups["vastllm"]["hosts"][name] = None
        for key, value in (
            ("gpu", hostvars["vastai_gpu_name"]),
            ("label", hostvars["vastai_label"]),
            ("status", hostvars["vastai_status"]),
        ):
            if value:
                group = f"vastai_{key}_{value}".replace(" ", "_").replace("-", "_")
                groups.setdefault(group, {"hosts": {}})["hosts"][name] = None
    return {"all": {"children": {"vastai": {"hosts": vastai}, **groups}}}


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or '"_meta"' not in proc.stdout:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    rows = generate_instances(args.instances)
    server = LabServer(LabState(api_keys=["bench-key"], instances=rows)).start()
    try:
        with tempfile.TemporaryDirectory(prefix="vastai-bench-") as tmp:
            tmpdir = Path(tmp)
            static = tmpdir / "static.yml"
            static.write_text(yaml.safe_dump(static_inventory(rows), sort_keys=False))
            config = (REPO / "inventory" / "vastai.yml").read_text()
            config = config.replace(".cache/vastai-inventory", str(tmpdir / "cache"))
            dynamic = tmpdir / "bench.vastai.yml"
            dynamic.write_text(config)
            env = ansible_env(
                REPO,
                VAST_URL=server.url,
                VAST_API_KEY="bench-key",
                ANSIBLE_INVENTORY_UNPARSED_FAILED="true",
            )
            inv = str(BIN / "ansible-inventory")
            cmds = {
                "static": [inv, "-i", str(static), "--list"],
                "uncached": [inv, "-i", str(dynamic), "--list", "--flush-cache"],
                "cached": [inv, "-i", str(dynamic), "--list"],
            }
            timed(cmds["uncached"], env)  # warm-up (and fills the cache)
            pages_before = len(server.state.requests)
            times: dict[str, list[float]] = {name: [] for name in cmds}
            for _ in range(args.repeat):  # interleaved so machine noise hits all three alike
                for name, cmd in cmds.items():
                    times[name].append(timed(cmd, env))
            pages = (len(server.state.requests) - pages_before) // args.repeat
    finally:
        server.stop()

    median = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "instances": args.instances,
        "pages_per_uncached_call": pages,
        "repeat": args.repeat,
        "median_seconds": {k: round(v, 3) for k, v in median.items()},
        "ratio_uncached_vs_static": round(median["uncached"] / median["static"], 2),
        "ratio_cached_vs_static": round(median["cached"] / median["static"], 2),
        "targets": {"cached": 1.5, "uncached": 3.0},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"ansible-inventory --list, {args.instances} instances, median of {args.repeat}")
        for name in ("static", "uncached", "cached"):
            print(f"  {name:9s} {median[name]:7.3f} s")
        print(f"  API pages per uncached call: {pages}")
        print(f"  uncached / static = {result['ratio_uncached_vs_static']}x (target <= 3x)")
        print(f"  cached   / static = {result['ratio_cached_vs_static']}x (target <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
