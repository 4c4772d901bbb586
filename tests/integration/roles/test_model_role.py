"""The `model` role, run by ansible-playbook against localhost and the Ollama lab double."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from vastllm_lab.testing import ansible_env

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
PLAYBOOK_BIN = str(Path(sys.executable).with_name("ansible-playbook"))
RECAP = re.compile(
    r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)


class Run:
    def __init__(self, proc: subprocess.CompletedProcess[str], fact_file: Path) -> None:
        self.rc = proc.returncode
        self.output = proc.stdout + proc.stderr
        # the yaml callback wraps long messages: compare texts with whitespace collapsed
        self.flat = " ".join(self.output.split())
        self.fact_file = fact_file
        match = RECAP.search(proc.stdout)
        assert match, self.output
        self.ok, self.changed, self.unreachable, self.failed = (int(g) for g in match.groups())

    @property
    def fact(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.fact_file.read_text())
        return data


def run_role(tmp_path: Path, play_vars: dict[str, Any], check: bool = False) -> Run:
    """Write a playbook including the role and run it; the published fact lands in a file."""
    fact_file = tmp_path / "vastllm_model.json"
    fact_file.unlink(missing_ok=True)
    play = [
        {
            "name": "Model role under test",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {"model_progress_file": str(tmp_path / "progress.json"), **play_vars},
            "roles": [{"role": "vastllm.stack.model"}],
            "post_tasks": [
                {
                    "name": "Save the published fact for the test",
                    "ansible.builtin.copy": {
                        "content": "{{ vastllm_model | to_json }}",
                        "dest": str(fact_file),
                        "mode": "0644",
                    },
                    "check_mode": False,
                    "changed_when": False,
                }
            ],
        }
    ]
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps(play))  # JSON is YAML
    env = ansible_env(
        REPO, ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False"
    )
    command = [
        PLAYBOOK_BIN,
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        str(playbook),
    ]
    if check:
        command.append("--check")
    proc = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=170, check=False
    )
    return Run(proc, fact_file)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def present(url: str) -> set[str]:
    return {m["name"] for m in get_json(f"{url}/api/tags")["models"]}


def test_first_run_falls_back_pulls_with_progress_publishes_fact_second_run_unchanged(
    ollama_emulator, tmp_path: Path
) -> None:
    # ~0.8 GB/s: qwen2.5-coder:7b (4.7 GB) takes about 6 s, long enough to watch the progress
    # with 1 s polls.
    emu = ollama_emulator(env={"VASTLLM_LAB_PULL_RATE": "0.8e9"})
    play_vars = {
        "model_ollama_url": emu.url,
        "model_models_path": emu.models_dir,
        "model_memory_limit_mb": 8192,  # excludes qwen3-coder:30b (24 GB)
        "model_progress_poll": 1,
    }

    first = run_role(tmp_path, play_vars)
    assert first.rc == 0, first.output
    assert first.changed == 1  # the pull job; warm-up and verification are read-only probes
    fact = first.fact
    assert fact["name"] == "qwen2.5-coder:7b"
    assert [(a["name"], a["result"]) for a in fact["attempts"]] == [
        ("qwen3-coder:30b", "skipped"),
        ("qwen2.5-coder:7b", "pulled"),
    ]
    tags = {m["name"]: m for m in get_json(f"{emu.url}/api/tags")["models"]}
    assert set(tags) == {"qwen2.5-coder:7b"}
    assert fact["digest"] == tags["qwen2.5-coder:7b"]["digest"]
    assert int(fact["size"]) == tags["qwen2.5-coder:7b"]["size"]
    assert fact["memory_limit_mb"] == 8192
    assert 0 < float(fact["ready_seconds"]) < 60

    # Progress was printed round after round while the pull ran.
    line = r"\(item=pulling qwen2\.5-coder:7b: (\d+\.\d) of 4\.7 GB \((\d+)%\) at [\d.]+ MB/s\)"
    progress = re.findall(line, first.flat)
    assert len(progress) >= 3, first.output
    percents = [int(p) for _, p in progress]
    assert percents == sorted(percents)
    assert 0 < percents[0] < 100  # seen while the download was running
    assert len(set(percents)) >= 2
    assert 0 <= float(fact["server_seconds"]) <= float(fact["ready_seconds"])
    # The warm-up left the model loaded; the verification got a real answer.
    assert [m["name"] for m in get_json(f"{emu.url}/api/ps")["models"]] == ["qwen2.5-coder:7b"]
    assert "(item=qwen2.5-coder:7b pulled [done])" in first.flat
    assert "qwen2.5-coder:7b answered" in first.flat

    second = run_role(tmp_path, play_vars)
    assert second.rc == 0, second.output
    assert second.changed == 0, second.output
    assert second.fact["name"] == "qwen2.5-coder:7b"
    assert second.fact["digest"] == fact["digest"]
    assert second.fact["attempts"][1]["result"] == "present"
    assert "pulling qwen2.5-coder:7b" not in second.flat


def test_gpu_facts_of_the_ollama_role_drive_url_memory_and_keep_alive(
    ollama_emulator, tmp_path: Path
) -> None:
    emu = ollama_emulator(faults={"load_delay": 1.5})
    play_vars = {
        "vastllm_ollama": {
            "url": emu.url,
            "models_path": emu.models_dir,
            "version": "0.21.0",
            "keep_alive": "2h",
        },
        "vastllm_gpu": {
            "count": 1,
            "names": ["NVIDIA GeForce RTX 4090"],
            "vram_total_mb": 24564,
            "vram_free_mb": 24000,
            "cpu_mode": False,
        },
        "model_ready_target_seconds": 1,
    }
    run = run_role(tmp_path, play_vars)
    assert run.rc == 0, run.output
    assert run.fact["name"] == "qwen3-coder:30b"  # 24 GB fits a 24564 MiB card
    assert run.fact["memory_limit_mb"] == 24564
    assert "(GPU VRAM)" in run.flat
    # The 1.5 s model load is above the 1 s target: a visible warning.
    assert float(run.fact["ready_seconds"]) >= 1.5
    assert "WARNING: qwen3-coder:30b took" in run.flat
    assert "above model_ready_target_seconds=1" in run.flat
    # keep_alive of the ollama role's facts was used for the warm-up: ~2 h left, not 5 min.
    loaded = get_json(f"{emu.url}/api/ps")["models"]
    assert [m["name"] for m in loaded] == ["qwen3-coder:30b"]
    expires = datetime.fromisoformat(loaded[0]["expires_at"].replace("Z", "+00:00"))
    left = (expires - datetime.now(UTC)).total_seconds()
    assert 6600 < left <= 7200


def test_nothing_fits_fails_naming_every_attempt(ollama_emulator, tmp_path: Path) -> None:
    emu = ollama_emulator(faults={"unknown_model": ["qwen2.5-coder:1.5b"]})
    run = run_role(
        tmp_path,
        {
            "model_ollama_url": emu.url,
            "model_memory_limit_mb": 4096,
            "model_progress_poll": 1,
            "model_candidates": [
                {"name": "qwen3-coder:30b", "size_gb": 19, "memory_gb": 24},
                {"name": "qwen2.5-coder:7b", "size_gb": 4.7, "memory_gb": 8},
                {"name": "qwen2.5-coder:1.5b", "size_gb": 1, "memory_gb": 2},
            ],
        },
    )
    assert run.rc != 0
    assert run.failed == 1
    assert "no candidate model could be used" in run.flat
    assert "qwen3-coder:30b: skipped (needs 24.0 GB of memory" in run.flat
    assert "qwen2.5-coder:7b: skipped (needs 8.0 GB of memory" in run.flat
    assert "qwen2.5-coder:1.5b: failed (pull failed: pull model manifest" in run.flat
    assert present(emu.url) == set()


def test_unwritable_progress_file_degrades_to_plain_waiting(
    ollama_emulator, tmp_path: Path
) -> None:
    emu = ollama_emulator(preload=["qwen3:0.6b"])
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    run = run_role(
        tmp_path,
        {
            "model_ollama_url": emu.url,
            "model_candidates": ["qwen3:0.6b"],
            "model_progress_file": str(blocker / "progress.json"),
            "model_progress_poll": 1,
        },
    )
    assert run.rc == 0, run.output
    assert run.fact["name"] == "qwen3:0.6b"
    assert "waiting for the job to report" in run.flat
    assert run.flat.count("waiting for the job to report") <= 8  # gave up polling, no hang
    assert "cannot write progress file" in run.flat  # the module's warning


def test_check_mode_cpu_mode_predicts_without_pulling(ollama_emulator, tmp_path: Path) -> None:
    emu = ollama_emulator()
    run = run_role(
        tmp_path,
        {
            "model_ollama_url": emu.url,
            "vastllm_gpu": {"count": 0, "names": [], "vram_total_mb": 0, "cpu_mode": True},
        },
        check=True,
    )
    assert run.rc == 0, run.output
    meminfo = Path("/proc/meminfo").read_text()
    total_mb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1)) // 1024  # type: ignore[union-attr]
    assert run.fact["memory_limit_mb"] == total_mb
    assert "RAM (CPU mode)" in run.flat
    assert run.fact["attempts"][-1]["result"] == "would_pull"
    assert "would be selected (check mode)" in run.flat
    assert present(emu.url) == set()  # nothing was pulled
    assert get_json(f"{emu.url}/api/ps")["models"] == []  # nothing was loaded


def test_failed_verification_is_reported_clearly(ollama_emulator, tmp_path: Path) -> None:
    emu = ollama_emulator(
        preload=["qwen3:0.6b"], faults={"chat_error": "CUDA error: out of memory"}
    )
    run = run_role(tmp_path, {"model_ollama_url": emu.url, "model_candidates": ["qwen3:0.6b"]})
    assert run.rc != 0
    expected = f"verification of qwen3:0.6b at {emu.url} failed: CUDA error: out of memory"
    assert expected in run.flat


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ([], "model_candidates must be a non-empty list of models"),
        (["qwen3:0.6b", {"size_gb": 3}], "model_candidates[1] needs a name"),
    ],
)
def test_preflight_rejects_bad_candidate_lists(tmp_path: Path, candidates, message) -> None:
    play_vars = {"model_ollama_url": "http://127.0.0.1:9", "model_candidates": candidates}
    run = run_role(tmp_path, play_vars)
    assert run.rc != 0
    assert message in run.flat


def test_without_the_ollama_role_the_url_must_be_given(tmp_path: Path) -> None:
    run = run_role(tmp_path, {})
    assert run.rc != 0
    assert (
        "model_ollama_url must be the http(s) URL of Ollama (got ''): run the ollama role first"
        in run.flat
    ), run.output
