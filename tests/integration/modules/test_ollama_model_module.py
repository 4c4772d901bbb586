"""The ollama_model module, run by `ansible localhost -m ollama_model`, against the lab double."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from ollama_module_run import REPO, direct_command, parse_direct, tags

from vastllm_lab.testing import free_port

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

BIG = {"name": "qwen3-coder:30b", "size_gb": 19, "memory_gb": 24}
SMALL = "qwen3:0.6b"
CODER_SMALL = "qwen2.5-coder:1.5b"
HUGE_MARGIN = 1_000_000  # GB: no disk has that much free space


def results(outcome: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["name"], a["result"]) for a in outcome["attempts"]]


# --- selection and fallbacks --------------------------------------------------------------------


def test_memory_limit_skips_big_model_pulls_next_and_second_run_is_unchanged(
    ollama_emulator, ollama_model_cli
) -> None:
    emu = ollama_emulator()
    args = {"ollama_url": emu.url, "candidates": [BIG, SMALL], "memory_limit_mb": 8192}

    first = ollama_model_cli(args)  # through `ansible -m`: AnsiballZ + our module_utils
    assert first.get("failed") is not True, first
    assert first["changed"] is True
    assert first["pulled"] is True
    assert first["model"] == SMALL
    assert results(first) == [("qwen3-coder:30b", "skipped"), (SMALL, "pulled")]
    assert "needs 24.0 GB of memory but the limit is 8.6 GB" in first["attempts"][0]["reason"]
    present = tags(emu.url)
    assert set(present) == {SMALL}
    assert first["digest"] == present[SMALL]
    assert first["size"] == 522_653_767

    second = ollama_model_cli(args)
    assert second["changed"] is False
    assert second["pulled"] is False
    assert second["model"] == SMALL
    assert results(second) == [("qwen3-coder:30b", "skipped"), (SMALL, "present")]
    assert second["digest"] == first["digest"]


def test_higher_preference_that_fits_is_pulled_even_if_a_later_one_is_present(
    ollama_emulator, ollama_model
) -> None:
    emu = ollama_emulator(preload=[SMALL])
    outcome = ollama_model({"ollama_url": emu.url, "candidates": [CODER_SMALL, SMALL]})
    assert outcome["changed"] is True
    assert outcome["model"] == CODER_SMALL
    assert results(outcome) == [(CODER_SMALL, "pulled")]
    assert set(tags(emu.url)) == {CODER_SMALL, SMALL}


def test_disk_check_skips_candidate_that_does_not_fit_free_space(
    ollama_emulator, ollama_model
) -> None:
    emu = ollama_emulator()
    outcome = ollama_model(
        {
            "ollama_url": emu.url,
            "candidates": [BIG, SMALL],  # SMALL declares no size: no disk check for it
            "models_path": emu.models_dir,
            "disk_margin_gb": HUGE_MARGIN,
        }
    )
    assert outcome["model"] == SMALL
    reason = outcome["attempts"][0]["reason"]
    assert outcome["attempts"][0]["result"] == "skipped"
    assert "of disk (19.0 GB + 1000000000000000.0" not in reason  # sizes are humanised
    assert "of disk (19.0 GB + 1000.0 TB margin) but only" in reason
    assert "qwen3-coder:30b" not in tags(emu.url)


def test_present_model_needs_no_disk(ollama_emulator, ollama_model) -> None:
    emu = ollama_emulator(preload=[SMALL])
    outcome = ollama_model(
        {
            "ollama_url": emu.url,
            "candidates": [{"name": SMALL, "size_gb": 0.5}],
            "models_path": emu.models_dir,
            "disk_margin_gb": HUGE_MARGIN,
        }
    )
    assert outcome["changed"] is False
    assert results(outcome) == [(SMALL, "present")]


def test_unknown_model_falls_through_to_next(ollama_emulator, ollama_model) -> None:
    emu = ollama_emulator(faults={"unknown_model": [CODER_SMALL]})
    outcome = ollama_model({"ollama_url": emu.url, "candidates": [CODER_SMALL, SMALL]})
    assert outcome["model"] == SMALL
    assert results(outcome) == [(CODER_SMALL, "failed"), (SMALL, "pulled")]
    assert "file does not exist" in outcome["attempts"][0]["reason"]


def test_pull_error_midway_in_a_200_stream_is_a_failure(ollama_emulator, ollama_model) -> None:
    emu = ollama_emulator(faults={"pull_fail_after": [CODER_SMALL]})
    outcome = ollama_model({"ollama_url": emu.url, "candidates": [CODER_SMALL, SMALL]})
    assert results(outcome) == [(CODER_SMALL, "failed"), (SMALL, "pulled")]
    assert "connection reset by peer" in outcome["attempts"][0]["reason"]
    assert CODER_SMALL not in tags(emu.url)


def test_disk_full_during_pull_fails_every_candidate_with_the_reason(
    ollama_emulator, ollama_model
) -> None:
    emu = ollama_emulator(faults={"disk_full": True})
    outcome = ollama_model({"ollama_url": emu.url, "candidates": [CODER_SMALL, SMALL]})
    assert outcome["failed"] is True
    assert outcome.get("changed", False) is False
    assert results(outcome) == [(CODER_SMALL, "failed"), (SMALL, "failed")]
    msg = outcome["msg"]
    assert msg.startswith("no candidate model could be used: ")
    assert f"{CODER_SMALL}: failed (pull failed: write " in msg
    assert "no space left on device" in msg
    assert f"{SMALL}: failed" in msg
    assert tags(emu.url) == {}


def test_all_candidates_failing_lists_each_attempt(ollama_emulator, ollama_model) -> None:
    emu = ollama_emulator()
    outcome = ollama_model(
        {
            "ollama_url": emu.url,
            "candidates": [BIG, "no-such-model:1b", {"name": "llama3.1:8b", "memory_gb": 8}],
            "memory_limit_mb": 4096,
        }
    )
    assert outcome["failed"] is True
    assert results(outcome) == [
        ("qwen3-coder:30b", "skipped"),
        ("no-such-model:1b", "failed"),
        ("llama3.1:8b", "skipped"),
    ]
    for name in ("qwen3-coder:30b", "no-such-model:1b", "llama3.1:8b"):
        assert name in outcome["msg"]
    assert "pull model manifest: file does not exist" in outcome["msg"]


# --- network failures ---------------------------------------------------------------------------


def test_unreachable_ollama_fails_once_naming_the_url(ollama_model_cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    outcome = ollama_model_cli({"ollama_url": url, "candidates": [CODER_SMALL, SMALL]})
    assert outcome["failed"] is True
    assert outcome["msg"] == f"cannot reach Ollama at {url}: connection refused"
    assert outcome["attempts"] == []  # no fall-through over candidates
    assert time.monotonic() - started < 30


def test_network_failure_during_pull_is_retried_then_each_candidate_fails(
    ollama_emulator, tmp_path: Path
) -> None:
    emu = ollama_emulator(faults={"chunk_delay": 0.3})
    progress = tmp_path / "progress.json"
    args = {
        "ollama_url": emu.url,
        "candidates": [CODER_SMALL, SMALL],
        "progress_file": str(progress),
        "retries": 1,
        "retry_delay": 0.2,
    }
    proc = subprocess.Popen(
        direct_command("vastllm.stack.ollama_model", args, tmp_path / "args"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if progress.exists() and json.loads(progress.read_text())["completed"] > 0:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the pull never reported progress")
        emu.kill()  # the network goes away in the middle of the download
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    outcome = parse_direct(stdout, stderr)
    assert outcome["failed"] is True
    assert results(outcome) == [(CODER_SMALL, "failed"), (SMALL, "failed")]
    for attempt in outcome["attempts"]:
        expected = f"network/server failure after 2 attempt(s) at {emu.url}"
        assert attempt["reason"].startswith(expected)
    assert "connection refused" in outcome["attempts"][1]["reason"]


# --- update / digest ----------------------------------------------------------------------------


def test_update_repulls_and_reports_changed_only_when_the_digest_changed(
    ollama_emulator, ollama_model, tmp_path: Path
) -> None:
    emu = ollama_emulator(preload=[SMALL])
    old_digest = tags(emu.url)[SMALL]

    same = ollama_model({"ollama_url": emu.url, "name": SMALL, "update": True})
    assert same["changed"] is False
    assert same["digest"] == old_digest

    # The registry publishes a new revision of the model.
    catalog = tmp_path / "catalog.json"
    catalog.write_text(
        json.dumps([{"name": SMALL, "size": 522_653_767, "family": "qwen3", "revision": "2"}])
    )
    emu.restart(env={"VASTLLM_LAB_CATALOG": str(catalog)})
    assert tags(emu.url)[SMALL] == old_digest

    plain = ollama_model({"ollama_url": emu.url, "name": SMALL})
    assert plain["changed"] is False  # without update, a present model is left alone

    updated = ollama_model({"ollama_url": emu.url, "name": SMALL, "update": True})
    assert updated["changed"] is True
    assert updated["pulled"] is True
    assert updated["digest"] != old_digest
    assert tags(emu.url)[SMALL] == updated["digest"]


# --- check mode and diff ------------------------------------------------------------------------


def test_check_mode_predicts_the_pull_without_pulling(
    ollama_emulator, ollama_model_cli, tmp_path: Path
) -> None:
    emu = ollama_emulator()
    outcome = ollama_model_cli(
        {"ollama_url": emu.url, "candidates": [BIG, SMALL], "memory_limit_mb": 8192}, check=True
    )
    assert outcome["changed"] is True
    assert outcome["pulled"] is False
    assert outcome["model"] == SMALL
    assert results(outcome) == [("qwen3-coder:30b", "skipped"), (SMALL, "would_pull")]
    assert "registry availability is not verified" in outcome["msg"]
    assert tags(emu.url) == {}
    assert not (tmp_path / "progress.json").exists()  # no side effect at all


def test_check_mode_with_present_model_is_unchanged(ollama_emulator, ollama_model) -> None:
    emu = ollama_emulator(preload=[SMALL])
    outcome = ollama_model({"ollama_url": emu.url, "name": SMALL}, check=True)
    assert outcome["changed"] is False
    assert outcome["digest"] == tags(emu.url)[SMALL]


def test_diff_lists_models_before_and_after(
    ollama_emulator, ollama_model, ollama_model_cli
) -> None:
    emu = ollama_emulator(preload=[SMALL])
    outcome = ollama_model_cli({"ollama_url": emu.url, "name": CODER_SMALL}, diff=True)
    assert outcome["diff"]["before"] == f"{SMALL}\n"
    assert outcome["diff"]["after"] == f"{CODER_SMALL}\n{SMALL}\n"

    predicted = ollama_model({"ollama_url": emu.url, "name": "llama3.1:8b"}, check=True, diff=True)
    assert predicted["diff"]["after"] == f"llama3.1:8b\n{CODER_SMALL}\n{SMALL}\n"
    assert "llama3.1:8b" not in tags(emu.url)

    quiet = ollama_model({"ollama_url": emu.url, "name": SMALL})
    assert "diff" not in quiet


# --- state: absent ------------------------------------------------------------------------------


def test_absent_removes_present_model_then_is_unchanged(ollama_emulator, ollama_model) -> None:
    emu = ollama_emulator(preload=[SMALL, CODER_SMALL])

    predicted = ollama_model({"ollama_url": emu.url, "name": SMALL, "state": "absent"}, check=True)
    assert predicted["changed"] is True
    assert results(predicted) == [(SMALL, "would_remove")]
    assert SMALL in tags(emu.url)

    removed = ollama_model({"ollama_url": emu.url, "name": SMALL, "state": "absent"}, diff=True)
    assert removed["changed"] is True
    assert results(removed) == [(SMALL, "removed")]
    assert set(tags(emu.url)) == {CODER_SMALL}
    assert removed["diff"]["after"] == f"{CODER_SMALL}\n"

    again = ollama_model({"ollama_url": emu.url, "name": SMALL, "state": "absent"})
    assert again["changed"] is False
    assert results(again) == [(SMALL, "absent")]


def test_absent_with_candidates_removes_every_listed_model(ollama_emulator, ollama_model) -> None:
    emu = ollama_emulator(preload=[SMALL, CODER_SMALL, "llama3.1:8b"])
    outcome = ollama_model(
        {"ollama_url": emu.url, "state": "absent", "candidates": [SMALL, BIG, CODER_SMALL]}
    )
    assert outcome["changed"] is True
    assert results(outcome) == [
        (SMALL, "removed"),
        ("qwen3-coder:30b", "absent"),
        (CODER_SMALL, "removed"),
    ]
    assert set(tags(emu.url)) == {"llama3.1:8b"}


# --- argument errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"candidates": []}, "invalid model list: candidates is empty"),
        (
            {"candidates": [SMALL, {"size_gb": 3}]},
            "invalid model list: candidates[1]: 'name' is required",
        ),
        (
            {"candidates": [{"name": SMALL, "vram_gb": 3}]},
            "candidates[0] (qwen3:0.6b): unknown key(s) vram_gb",
        ),
        ({"name": SMALL, "candidates": [SMALL]}, "mutually exclusive"),
        ({}, "one of the following is required: name, candidates"),
        ({"name": SMALL, "ollama_url": "localhost:11434"}, "ollama_url must be an http(s) URL"),
        ({"name": SMALL, "memory_limit_mb": 0}, "memory_limit_mb must be positive"),
    ],
)
def test_argument_errors_are_clear(ollama_emulator, ollama_model, args, fragment) -> None:
    full = {"ollama_url": ollama_emulator.url}
    full.update(args)
    outcome = ollama_model(full)
    assert outcome["failed"] is True
    assert fragment in outcome["msg"]
    assert "Traceback" not in json.dumps(outcome)


# --- progress file ------------------------------------------------------------------------------


def test_progress_file_shows_growing_completed_bytes_during_a_slow_pull(
    ollama_emulator, tmp_path: Path
) -> None:
    emu = ollama_emulator(faults={"chunk_delay": 0.2})
    progress = tmp_path / "state" / "progress.json"  # the directory is created by the module
    args = {
        "ollama_url": emu.url,
        "name": CODER_SMALL,
        "progress_file": str(progress),
        "run_id": "run-42",
    }
    proc = subprocess.Popen(
        direct_command("vastllm.stack.ollama_model", args, tmp_path / "args"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[dict[str, Any]] = []
    try:
        while proc.poll() is None:
            if progress.exists():
                record = json.loads(progress.read_text())  # atomic rewrites: always whole JSON
                if not seen or record != seen[-1]:
                    seen.append(record)
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    outcome = parse_direct(stdout, stderr)
    assert outcome["changed"] is True

    final = json.loads(progress.read_text())
    assert final["state"] == "done"
    assert final["status"] == "success"
    assert final["run_id"] == "run-42"
    assert final["model"] == CODER_SMALL
    assert final["total"] >= 986_062_089
    assert final["completed"] == final["total"]
    assert final["percent"] == 100.0
    assert final["finished"] is True
    assert final["message"] == f"{CODER_SMALL} pulled"
    assert seen[0]["state"] in ("checking", "pulling")
    assert all(r["finished"] is False for r in seen[:-1])

    pulling = [r["completed"] for r in seen if r["state"] == "pulling"]
    distinct = sorted(set(pulling))
    assert len(distinct) >= 3, seen
    assert pulling == sorted(pulling), "completed must never go backwards"
    assert 0 < distinct[1] < final["total"]
    middle = next(r for r in seen if r["state"] == "pulling" and 0 < r["completed"] < r["total"])
    assert middle["message"].startswith(f"pulling {CODER_SMALL}: ")
    assert middle["rate_bytes_per_s"] > 0
    assert middle["updated_at"] >= middle["started_at"]
