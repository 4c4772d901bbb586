"""Pure candidate-fit logic of the ollama_model module (plugins/module_utils/model_fit.py)."""

from __future__ import annotations

import pytest
from ansible_collections.vastllm.stack.plugins.module_utils.model_fit import (
    GB,
    MIB,
    Candidate,
    CandidateError,
    PullProgress,
    check_fit,
    format_progress,
    human_bytes,
    index_models,
    model_key,
    normalize_name,
    parse_candidate,
    parse_candidates,
    percent,
    present_names,
)

# --- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("qwen3", "qwen3:latest"),
        ("qwen3-coder:30b", "qwen3-coder:30b"),
        ("library/qwen3:8b", "qwen3:8b"),
        ("registry.ollama.ai/library/qwen3:8b", "qwen3:8b"),
        ("registry.ollama.ai/library/qwen3", "qwen3:latest"),
        ("someuser/mymodel", "someuser/mymodel:latest"),
        ("myreg:5000/team/model", "myreg:5000/team/model:latest"),
        ("myreg:5000/team/model:v2", "myreg:5000/team/model:v2"),
        ("  qwen3:0.6b ", "qwen3:0.6b"),
    ],
)
def test_normalize_name_matches_ollama_listing(given: str, expected: str) -> None:
    assert normalize_name(given) == expected


@pytest.mark.parametrize("bad", ["", "   ", "qwen 3", "qwen3:", ":7b"])
def test_normalize_name_rejects_malformed(bad: str) -> None:
    with pytest.raises(CandidateError):
        normalize_name(bad)


def test_model_key_is_case_insensitive() -> None:
    assert model_key("Qwen3-Coder:30B") == model_key("qwen3-coder:30b")
    assert model_key("llama3.1") == "llama3.1:latest"


# --- candidates --------------------------------------------------------------------------------


def test_parse_string_and_mapping_entries() -> None:
    parsed = parse_candidates(
        [
            {"name": "qwen3-coder:30b", "size_gb": 19, "memory_gb": 24},
            {"name": "qwen2.5-coder:7b", "size_bytes": 4683087332},
            "qwen2.5-coder:1.5b",
        ]
    )
    assert parsed == [
        Candidate("qwen3-coder:30b", 19 * GB, 24 * GB),
        Candidate("qwen2.5-coder:7b", 4683087332, None),
        Candidate("qwen2.5-coder:1.5b", None, None),
    ]


def test_numbers_given_as_strings_are_accepted() -> None:
    # Jinja templating often turns numbers into strings.
    assert parse_candidate({"name": "m", "size_gb": "4.7"}, 0).size_bytes == int(4.7 * GB)


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        ([], "candidates is empty"),
        (None, "candidates is empty"),
        ([{"size_gb": 4}], "candidates[0]: 'name' is required"),
        (["ok:1b", {"name": ""}], "candidates[1]: 'name' is required"),
        ([42], "candidates[0]: expected a model name or a mapping"),
        ([["a"]], "candidates[0]: expected a model name or a mapping with 'name', got list"),
        ([{"name": "m", "vram": 3}], "candidates[0] (m): unknown key(s) vram"),
        ([{"name": "m", "size_gb": "big"}], "candidates[0] (m): size_gb must be a number"),
        ([{"name": "m", "size_gb": -1}], "size_gb must be a positive number"),
        ([{"name": "m", "memory_gb": True}], "memory_gb must be a number"),
        ([{"name": "m", "size_gb": 1, "size_bytes": 5}], "size_gb or size_bytes, not both"),
        (["a:1b", "b:2b", "A:1B"], "candidates[2]: A:1B is listed twice (also candidates[0])"),
        (["x y"], "candidates[0]: model name 'x y' contains whitespace"),
    ],
)
def test_bad_candidate_lists_name_the_entry(entries: object, fragment: str) -> None:
    with pytest.raises(CandidateError) as info:
        parse_candidates(entries)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_required_memory_declared_estimated_or_unknown() -> None:
    assert Candidate("a", 10 * GB, 12 * GB).required_memory_bytes() == 12 * GB
    assert Candidate("a", 10 * GB).required_memory_bytes() == 12 * GB  # 1.2 x size
    assert Candidate("a").required_memory_bytes() is None


# --- fit decisions -----------------------------------------------------------------------------

BIG = Candidate("qwen3-coder:30b", 19 * GB, 24 * GB)


def test_fits_when_disk_and_memory_suffice() -> None:
    assert check_fit(BIG, False, 100 * GB, 2 * GB, 24576 * MIB) is None


def test_memory_too_small_is_reported_with_both_figures() -> None:
    reason = check_fit(BIG, False, 100 * GB, 2 * GB, 16384 * MIB)
    assert reason == "needs 24.0 GB of memory but the limit is 17.2 GB"


def test_memory_limit_applies_to_present_models_too() -> None:
    assert check_fit(BIG, True, 0, 2 * GB, 8192 * MIB) is not None


def test_estimated_memory_is_labelled() -> None:
    reason = check_fit(Candidate("m", 10 * GB), False, None, 0, 8192 * MIB)
    assert reason is not None
    assert "estimated as 1.2 x size" in reason


def test_disk_needs_size_plus_margin() -> None:
    # 19 GB + 2 GB margin = 21 GB: 20 GB free is not enough, 21 GB is.
    reason = check_fit(BIG, False, 20 * GB, 2 * GB, None)
    assert reason == "needs 21.0 GB of disk (19.0 GB + 2.0 GB margin) but only 20.0 GB is free"
    assert check_fit(BIG, False, 21 * GB, 2 * GB, None) is None


def test_present_model_needs_no_disk() -> None:
    assert check_fit(BIG, True, 0, 2 * GB, None) is None


def test_unknown_size_or_free_space_skips_the_disk_check() -> None:
    assert check_fit(Candidate("m"), False, 0, 2 * GB, 1) is None
    assert check_fit(BIG, False, None, 2 * GB, None) is None


# --- /api/tags ---------------------------------------------------------------------------------


def test_index_models_keys_by_normalised_name_and_ignores_junk() -> None:
    tags = {
        "models": [
            {"name": "Qwen3:0.6b", "digest": "d1", "size": 5},
            {"model": "llama3.1:8b", "digest": "d2"},
            {"name": ""},
            "junk",
            {"name": "bad name"},
        ]
    }
    index = index_models(tags)
    assert set(index) == {"qwen3:0.6b", "llama3.1:8b"}
    assert index["qwen3:0.6b"]["digest"] == "d1"
    assert present_names(index) == ["Qwen3:0.6b", "llama3.1:8b"]
    assert index_models({}) == {}


# --- sizes and progress ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1500, "1.5 kB"),
        (4_700_000_000, "4.7 GB"),
        (19 * GB, "19.0 GB"),
        (2_500 * GB, "2.5 TB"),
        (None, "unknown"),
    ],
)
def test_human_bytes(count: int | None, text: str) -> None:
    assert human_bytes(count) == text


def test_format_progress_line() -> None:
    assert (
        format_progress("qwen3-coder:30b", int(12.3 * GB), 19 * GB)
        == "pulling qwen3-coder:30b: 12.3 of 19.0 GB (64%)"
    )
    assert format_progress("m", 3 * GB, 0) == "pulling m: 3.0 GB so far"
    assert percent(5, 0) == 0.0
    assert percent(20, 10) == 100.0


def test_pull_progress_sums_layers_and_needs_final_success() -> None:
    tracker = PullProgress("m:1b", started_at=100.0)
    tracker.feed({"status": "pulling manifest"}, 100.0)
    tracker.feed({"status": "pulling a", "digest": "sha256:a", "total": 800, "completed": 0}, 101)
    tracker.feed({"status": "pulling b", "digest": "sha256:b", "total": 200}, 101.0)
    tracker.feed({"status": "pulling a", "digest": "sha256:a", "total": 800, "completed": 400}, 102)
    assert (tracker.completed, tracker.total) == (400, 1000)
    record = tracker.record(104.0, "pulling")
    assert record["percent"] == 40.0
    assert record["rate_bytes_per_s"] == 100.0
    assert record["message"] == "pulling m:1b: 0.0 of 0.0 GB (40%)"
    assert tracker.failure() == "pull failed: stream ended without success (last status: pulling a)"
    tracker.feed({"status": "pulling b", "digest": "sha256:b", "total": 200, "completed": 200}, 105)
    tracker.feed({"status": "verifying sha256 digest"}, 105.0)
    tracker.feed({"status": "success"}, 106.0)
    assert tracker.failure() is None
    assert tracker.completed == 600


def test_pull_progress_error_line_fails_even_after_progress() -> None:
    tracker = PullProgress("m:1b", 0.0)
    tracker.feed({"status": "pulling a", "digest": "sha256:a", "total": 10, "completed": 5}, 1.0)
    tracker.feed({"error": "write /models/blobs/x: no space left on device"}, 2.0)
    assert tracker.failure() == "pull failed: write /models/blobs/x: no space left on device"
    assert tracker.record(2.0, "failed")["error"] == (
        "write /models/blobs/x: no space left on device"
    )


def test_pull_progress_empty_stream_is_a_failure() -> None:
    assert PullProgress("m", 0.0).failure() == "pull failed: Ollama sent an empty response"


def test_pull_progress_completed_never_goes_backwards() -> None:
    tracker = PullProgress("m", 0.0)
    tracker.feed({"digest": "a", "total": 10, "completed": 7}, 1.0)
    tracker.feed({"digest": "a", "total": 10, "completed": 3}, 2.0)
    assert tracker.completed == 7


def test_done_record_says_pulled() -> None:
    tracker = PullProgress("m", 0.0)
    tracker.feed({"digest": "a", "total": 2 * GB, "completed": 2 * GB}, 1.0)
    tracker.feed({"status": "success"}, 1.0)
    assert tracker.record(1.0, "done")["message"] == "pulled m: 2.0 of 2.0 GB (100%)"
