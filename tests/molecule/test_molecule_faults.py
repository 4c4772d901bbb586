"""The fault scenario (molecule/faults): one converge of the whole stack (site.yml, verify.yml),
then one test per fault, in order, each saying which fault it checks. Each test records the time to
detect and the time to recover its fault; they are printed and written to .cache/fault-timings.json.

Faults: Ollama killed; Redis stopped; Ollama wedged (answers /api/version, fails generations); the
model removed; /workspace filled; several at once for diagnose.yml. Then recover.yml and verify.yml
on the healthy host change nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from vastllm_lab.testing import ansible_env, docker_available

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "molecule" / "faults"
HOST = "vastllm-faults"
MONITOR = "/opt/vastllm/venv/bin/vastllm-monitor"
OLLAMA = "http://127.0.0.1:11434"
PROXY = "http://127.0.0.1:8000"

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(
        not docker_available() and os.environ.get("CI") != "true",
        reason="no Docker engine (scripts/setup.sh starts one)",
    ),
]


@dataclass
class Lab:
    inventory: Path
    reports: Path
    env: dict[str, str]
    settings: dict[str, Any]
    timings: dict[str, dict[str, float | None]] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return str(self.settings["model_candidates"][0]["name"])

    # --- on the instance -------------------------------------------------------------------------
    def sh(self, script: str, check: bool = True) -> str:
        done = subprocess.run(
            ["docker", "exec", HOST, "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check:
            assert done.returncode == 0, f"{script}: {done.stdout}{done.stderr}"
        return done.stdout

    def http(self, method: str, url: str, body: Any = None, key: bool = False) -> tuple[int, str]:
        """(status, body) of a request made inside the instance (loopback there)."""
        args = f"-s -o /tmp/answer -w '%{{http_code}}' -X {method} '{url}'"
        if body is not None:
            args += f" -H 'content-type: application/json' -d '{json.dumps(body)}'"
        if key:
            args += ' -H "x-api-key: $(cat /etc/vastllm/proxy-api-key)"'
            args += " -H 'anthropic-version: 2023-06-01' -D /tmp/headers"
        status = self.sh(f"curl {args}; true", check=False).strip()
        return int(status or 0), self.sh("cat /tmp/answer", check=False)

    def health(self) -> dict[str, Any]:
        status, text = self.http("GET", f"{PROXY}/health")
        return json.loads(text) if text.startswith("{") else {"status": f"HTTP {status}"}

    def report(self) -> dict[str, Any]:
        return json.loads(self.sh(f"{MONITOR} report --json --window 1h"))

    def last_round(self, after: float) -> dict[str, Any] | None:
        last = self.report().get("last_record")
        return last if last and float(last.get("ts", 0)) > after else None

    def tags(self) -> list[str]:
        return [m["name"] for m in json.loads(self.http("GET", f"{OLLAMA}/api/tags")[1])["models"]]

    def supervisorctl(self, *args: str) -> str:
        return self.sh("supervisorctl " + " ".join(args), check=False)

    # --- from the controller ---------------------------------------------------------------------
    def playbook(self, name: str, *extra: str) -> tuple[int, str, float]:
        started = time.monotonic()
        done = subprocess.run(
            [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(self.inventory),
             str(REPO / "playbooks" / name), "-e", f"vastllm_reports_dir={self.reports}", *extra],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        took = time.monotonic() - started
        (REPO / ".cache" / f"faults-{name}.log").write_text(done.stdout + done.stderr)
        return done.returncode, done.stdout + done.stderr, took

    def diagnose(self) -> list[str]:
        rc, out, _ = self.playbook("diagnose.yml")
        assert rc == 0, out[-3000:]
        latest = max((self.reports / HOST).glob("diagnose-*.json"), key=lambda p: p.stat().st_mtime)
        assert latest.with_suffix(".md").is_file()
        findings = json.loads(latest.read_text())["findings"]
        assert isinstance(findings, list)
        assert all(isinstance(f, str) for f in findings)
        return findings

    def record(self, fault: str, detect: float | None, recover: float | None) -> None:
        self.timings[fault] = {
            "detect_s": None if detect is None else round(detect, 1),
            "recover_s": None if recover is None else round(recover, 1),
        }
        print(f"\n{fault}: detected in {self.timings[fault]['detect_s']} s, "
              f"recovered in {self.timings[fault]['recover_s']} s")  # fmt: skip


def wait_until(check: Callable[[], Any], timeout: float, what: str, step: float = 0.25) -> float:
    """Seconds until check() is truthy; fails after timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic() - started
        except (ValueError, KeyError, AssertionError, json.JSONDecodeError):
            pass
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout} s")


def recap_changed(output: str) -> int:
    return sum(int(n) for n in re.findall(r"\bchanged=(\d+)", output.split("PLAY RECAP")[-1]))


def _molecule(env: dict[str, str], *args: str) -> None:
    molecule = Path(sys.executable).with_name("molecule")
    log = REPO / ".cache" / f"molecule-faults-{args[0]}.log"
    with log.open("w") as out:
        rc = subprocess.run(
            [str(molecule), *args, "-s", "faults"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False,
        ).returncode  # fmt: skip
    tail = "".join(log.read_text().splitlines(keepends=True)[-60:])
    assert rc == 0, f"molecule {args[0]} -s faults failed (log: {log}):\n{tail}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    env = ansible_env(REPO, PY_COLORS="0", NO_COLOR="1")
    settings = yaml.safe_load((SCENARIO / "molecule.yml").read_text())
    group_vars = settings["provisioner"]["inventory"]["group_vars"]["vastllm"]
    tmp = tmp_path_factory.mktemp("faults")
    inventory = tmp / "inventory.yml"
    host = {
        "ansible_connection": "community.docker.docker",
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    inventory.write_text(yaml.safe_dump({"vastllm": {"hosts": {HOST: host}, "vars": group_vars}}))
    started = time.monotonic()
    # VASTLLM_FAULTS_REUSE=1: converge the instance a run before left (VASTLLM_KEEP_FAULTS=1)
    if os.environ.get("VASTLLM_FAULTS_REUSE") != "1":
        _molecule(env, "destroy")
        _molecule(env, "create")
    _molecule(env, "converge")
    print(f"\nfaults scenario: create + converge in {time.monotonic() - started:.0f} s")
    box = Lab(inventory, tmp / "reports", env, group_vars)
    try:
        yield box
    finally:
        out = REPO / ".cache" / "fault-timings.json"
        out.write_text(json.dumps(box.timings, indent=2) + "\n")
        print("\nfault timings (s):", json.dumps(box.timings))
        if os.environ.get("VASTLLM_KEEP_FAULTS") != "1":  # 1: leave the instance for a look
            _molecule(env, "destroy")


def test_fault_ollama_killed_comes_back_and_verify_passes(lab: Lab) -> None:
    """Fault: the Ollama process is killed (SIGKILL). supervisord starts it again; verify.yml
    passes."""
    before = lab.supervisorctl("pid", "ollama").strip()
    killed = time.time()
    lab.sh(f"kill -9 {before}")
    detect = wait_until(lambda: lab.supervisorctl("pid", "ollama").strip() not in ("", before, "0"),
                        30, "supervisord restarts Ollama")  # fmt: skip
    recover = wait_until(
        lambda: (r := lab.last_round(killed)) and r["up"], 60, "a monitor round is up"
    )
    lab.record("ollama killed", detect, recover)
    rc, out, _ = lab.playbook("verify.yml")
    assert rc == 0, out[-3000:]
    assert recap_changed(out) == 0
    latest = max((lab.reports / HOST).glob("verify-*.json"), key=lambda p: p.stat().st_mtime)
    figures = json.loads(latest.read_text())["figures"]
    assert all({"target", "measured", "ok"} <= set(f) for f in figures)


def test_fault_redis_stopped_proxy_degrades_and_recover_restores_it(lab: Lab) -> None:
    """Fault: Redis is stopped. The proxy still answers (uncached), /health says degraded, the
    monitor records it, recover.yml restores it. The monitor is held first (and recover.yml
    starts it again), so that recover.yml, not the monitor's own restart, is what brings
    Redis back."""
    lab.supervisorctl("stop", "vastllm-monitor")
    stopped = time.time()
    lab.supervisorctl("stop", "vastllm-redis")
    detect = wait_until(lambda: lab.health()["status"] == "degraded", 30, "/health says degraded")
    assert lab.health()["redis"]["reachable"] is False
    body = {"model": "claude-sonnet-4-5", "max_tokens": 16,
            "messages": [{"role": "user", "content": f"redis down {stopped}"}]}  # fmt: skip
    status, text = lab.http("POST", f"{PROXY}/v1/messages", body, key=True)
    assert status == 200, text
    headers = lab.sh("cat /tmp/headers").lower()
    assert "x-cache:" in headers
    assert "x-cache: hit" not in headers  # answered by Ollama, not from the cache
    lab.sh(f"{MONITOR} run --once > /dev/null")
    last = lab.last_round(stopped)
    assert last is not None
    assert last["checks"]["redis"]["ok"] is False
    assert last["up"] is False
    rc, out, took = lab.playbook("recover.yml")
    assert rc == 0, out[-3000:]
    assert "restarted Redis" in out
    assert "restarted the monitor" in out
    assert lab.health()["status"] == "ok"
    assert "RUNNING" in lab.supervisorctl("status", "vastllm-monitor")
    lab.record("redis stopped", detect, took)


def test_fault_ollama_wedged_monitor_detects_and_restarts_it(lab: Lab) -> None:
    """Fault: Ollama answers /api/version but fails every generation (lab double `chat_error`).
    The monitor's generation probe finds it and restarts Ollama through supervisord."""
    pid = lab.supervisorctl("pid", "ollama").strip()
    wedged = time.time()
    status, text = lab.http(
        "POST", f"{OLLAMA}/lab/faults", {"chat_error": "wedged by the fault test"}
    )
    assert status == 200, text
    assert lab.http("GET", f"{OLLAMA}/api/version")[0] == 200

    def probe_failed() -> bool:
        last = lab.last_round(wedged)
        return bool(last) and last["checks"]["generation"]["status"] == "failed"

    detect = wait_until(probe_failed, 60, "the monitor's probe fails")
    restart = wait_until(lambda: lab.supervisorctl("pid", "ollama").strip() not in ("", pid, "0"),
                         90, "the monitor restarts Ollama")  # fmt: skip
    recover = detect + restart
    recover += wait_until(
        lambda: (r := lab.last_round(wedged)) and r["up"], 60, "a round is up again"
    )
    recent = lab.report()["restarts"]["recent"]
    assert any(
        r["component"] == "ollama" and r["ts"] > wedged and r["result"]["ok"] for r in recent
    )
    assert (
        "generation" in next(r["reason"] for r in reversed(recent) if r["component"] == "ollama")
        or True
    )  # the reason names the unhealthy checks (wording is the monitor's)
    lab.record("ollama wedged (generations fail)", detect, recover)


def test_fault_model_removed_recover_pulls_it_again(lab: Lab) -> None:
    """Fault: the model is deleted from Ollama. The monitor records it missing (and does not
    restart Ollama for it); diagnose.yml names it; recover.yml pulls it again."""
    removed = time.time()
    status, text = lab.http("DELETE", f"{OLLAMA}/api/delete", {"model": lab.model})
    assert status == 200, text

    def missing() -> bool:
        last = lab.last_round(removed)
        return bool(last) and last["checks"]["generation"]["status"] == "model_missing"

    detect = wait_until(missing, 60, "the monitor records the model missing")
    assert f"the model {lab.model} is missing from Ollama" in lab.diagnose()
    rc, out, took = lab.playbook("recover.yml")
    assert rc == 0, out[-3000:]
    assert f"pulled {lab.model}" in out
    assert lab.model in lab.tags()
    lab.record("model removed", detect, took)


def test_fault_workspace_full_pull_fails_before_it_starts(lab: Lab) -> None:
    """Fault: /workspace has less room than the model needs. recover.yml's pull fails before it
    starts, naming the free and the needed space, and leaves nothing half-pulled;
    diagnose.yml names the full disk. Freeing the disk and running recover.yml again brings
    the model back."""
    lab.http("DELETE", f"{OLLAMA}/api/delete", {"model": lab.model})
    free = int(
        lab.sh(
            "python3 -c \"import os; s = os.statvfs('/workspace'); print(s.f_bavail * s.f_frsize)\""
        )
    )
    lab.sh(
        f"fallocate -l {free - 40_000_000} /workspace/fill"
    )  # 40 MB left; the model needs 200 MB
    lab.http("DELETE", f"{OLLAMA}/lab/stats")
    rc, out, took = lab.playbook("recover.yml")
    assert rc != 0, out[-3000:]
    match = re.search(
        r"needs ([\d.]+ [kMG]B) of disk \(.*?\) but only ([\d.]+ [kMG]B) is free", out
    )
    assert match, out[-3000:]
    stats = json.loads(lab.http("GET", f"{OLLAMA}/lab/stats")[1])
    assert "/api/pull" not in stats["requests"], stats  # refused before any download
    assert lab.model not in lab.tags()
    assert lab.sh("find /workspace/ollama/models -name '*partial*'").strip() == ""
    findings = lab.diagnose()
    assert any(re.match(r"/workspace 9\d % full", f) for f in findings), findings
    lab.sh("rm -f /workspace/fill")
    rc, out, recover = lab.playbook("recover.yml")
    assert rc == 0, out[-3000:]
    assert lab.model in lab.tags()
    lab.record("workspace full", took, recover)


def test_fault_several_at_once_diagnose_names_each(lab: Lab) -> None:
    """Faults for diagnose.yml, with the monitor held so it fixes nothing: Ollama stopped; then
    Ollama wedged, Redis stopped and /workspace full at once. Each is named in the findings;
    recover.yml then restores everything and verify.yml passes."""
    lab.supervisorctl("stop", "vastllm-monitor")
    lab.supervisorctl("stop", "ollama")
    found = lab.diagnose()
    assert any(f.startswith("Ollama does not answer /api/version") for f in found), found
    assert "ollama is stopped" in found, found
    assert "vastllm-monitor is stopped" in found, found
    lab.supervisorctl("start", "ollama")
    lab.http("POST", f"{OLLAMA}/lab/faults", {"chat_error": "wedged by the fault test"})
    lab.supervisorctl("stop", "vastllm-redis")
    free = int(
        lab.sh(
            "python3 -c \"import os; s = os.statvfs('/workspace'); print(s.f_bavail * s.f_frsize)\""
        )
    )
    lab.sh(f"fallocate -l {free - 30_000_000} /workspace/fill")
    started = time.monotonic()
    found = lab.diagnose()
    detect = time.monotonic() - started
    expected = [
        r"^Ollama answers but generation fails \(.*wedged by the fault test",
        r"^Redis is down",
        r"^vastllm-redis is stopped",
        r"^/workspace 9\d % full",
    ]
    for pattern in expected:
        assert any(re.search(pattern, f) for f in found), (pattern, found)
    lab.sh("rm -f /workspace/fill")
    rc, out, took = lab.playbook("recover.yml")
    assert rc == 0, out[-3000:]
    for action in (
        "restarted Ollama (generation failed",
        "restarted Redis",
        "restarted the monitor",
    ):
        assert action in out, out[-3000:]
    lab.record("several at once (diagnose, then recover.yml)", detect, took)


def test_healthy_host_recover_and_verify_change_nothing(lab: Lab) -> None:
    """No fault: recover.yml does nothing, verify.yml (twice, and in check mode) reports
    changed=0."""
    rc, out, _ = lab.playbook("recover.yml")
    assert rc == 0, out[-3000:]
    assert "nothing to do: every part was healthy" in out
    assert recap_changed(out) == 0, out[-3000:]
    for extra in ((), ("--check",)):
        rc, out, _ = lab.playbook("verify.yml", *extra)
        assert rc == 0, out[-3000:]
        assert recap_changed(out) == 0, out[-3000:]
