"""`molecule test` of the whole stack, as a user types it from the repository root.

create -> converge -> idempotence (zero changes) -> check mode -> verify (testinfra) -> destroy,
in a Debian container without systemd. Phase durations go to .cache/molecule-timings.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vastllm_lab.testing import ansible_env, docker_available

REPO = Path(__file__).resolve().parents[2]
PHASES = ("destroy", "create", "converge", "idempotence", "check", "verify")
# Molecule announces each action, e.g. "INFO     [default > converge] Executing".
ANNOUNCE = re.compile(r"\[default > (" + "|".join(PHASES) + r")\] Executing$")


pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(
        not docker_available() and os.environ.get("CI") != "true",
        reason="no Docker engine (scripts/setup.sh starts one)",
    ),
]


@pytest.mark.timeout(3000)
def test_molecule_default_scenario() -> None:
    molecule = Path(sys.executable).with_name("molecule")
    log_path = REPO / ".cache" / "molecule-test.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    segments: list[tuple[str, float]] = []
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(molecule), "test"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # this virtualenv's bin/ first on PATH (molecule runs ansible-playbook), no colours
            env=ansible_env(REPO, PY_COLORS="0", NO_COLOR="1"),
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            match = ANNOUNCE.search(line.rstrip())
            if match and (not segments or segments[-1][0] != match.group(1)):
                segments.append((match.group(1), time.monotonic()))
        returncode = proc.wait()
    end = time.monotonic()
    durations: dict[str, float] = {}
    for i, (name, start) in enumerate(segments):
        stop = segments[i + 1][1] if i + 1 < len(segments) else end
        durations[name if name not in durations else f"{name} (final)"] = round(stop - start, 1)
    order = [name for name, _ in segments]
    (REPO / ".cache" / "molecule-timings.json").write_text(json.dumps(durations, indent=2))
    print("molecule phase durations (s):", json.dumps(durations))
    tail = "".join(log_path.read_text().splitlines(keepends=True)[-80:])
    assert returncode == 0, f"molecule test failed (full log: {log_path}):\n{tail}"
    assert {"converge", "idempotence", "verify"} <= set(order), f"phases seen: {order}\n{tail}"
