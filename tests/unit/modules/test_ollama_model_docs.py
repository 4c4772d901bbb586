"""ollama_model's documentation matches its argument spec; its small file-system helpers work."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import yaml
from ansible_collections.vastllm.stack.plugins.modules import ollama_model as module

from ansible_collection import plugin_docs

# As ansible-doc shows them (fragments merged)
DOCS, EXAMPLES, RETURNS = plugin_docs("module", "ollama_model")


def test_documentation_examples_and_return_are_valid_yaml() -> None:
    for text in (module.DOCUMENTATION, module.EXAMPLES, module.RETURN):
        assert yaml.safe_load(text)


def test_documented_options_match_the_argument_spec() -> None:
    options = DOCS["options"]
    spec = module.ARGUMENT_SPEC
    assert set(options) == set(spec)
    for name, doc in options.items():
        assert doc["type"] == spec[name]["type"], name
        assert doc.get("default") == spec[name].get("default"), name
        assert doc.get("choices") == spec[name].get("choices"), name
        assert doc.get("elements") == spec[name].get("elements"), name
        assert doc.get("description"), name


def test_documented_attributes_declare_full_check_and_diff_support() -> None:
    attributes = DOCS["attributes"]
    assert attributes["check_mode"]["support"] == "full"
    assert attributes["diff_mode"]["support"] == "full"


def test_every_return_value_has_type_returned_and_sample() -> None:
    returns = RETURNS
    assert {"model", "attempts", "digest", "size", "pulled", "changed", "diff", "msg"} <= set(
        returns
    )
    for key, doc in returns.items():
        assert {"description", "type", "returned", "sample"} <= set(doc), key


def test_examples_call_the_module_by_fqcn_with_documented_options() -> None:
    options = set(DOCS["options"])
    for task in yaml.safe_load(EXAMPLES):
        assert set(task["vastllm.stack.ollama_model"]) <= options, task["name"]


def test_free_disk_walks_up_to_an_existing_parent(tmp_path: Path) -> None:
    expected = os.statvfs(tmp_path)
    free = module.free_disk_bytes(str(tmp_path / "not" / "yet" / "created"))
    assert free is not None
    # same file system: within what other processes may write meanwhile
    assert abs(free - expected.f_bavail * expected.f_frsize) < 512 * 1024**2


def test_progress_file_is_written_atomically_with_run_id(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "progress.json"
    writer = module.ProgressFile(str(target), "run-1")
    writer.write({"model": "m", "completed": 1}, force=True)
    writer.write({"model": "m", "completed": 2})  # throttled: within 0.5 s of the last write
    assert json.loads(target.read_text()) == {
        "model": "m",
        "completed": 1,
        "run_id": "run-1",
        "finished": False,
    }
    writer.write({"model": "m", "completed": 3}, force=True)
    assert json.loads(target.read_text())["completed"] == 3
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["progress.json"]  # no temp files left


def test_progress_file_starts_checking_and_finishes_with_the_last_figures(tmp_path: Path) -> None:
    target = tmp_path / "progress.json"
    writer = module.ProgressFile(str(target), "run-7")
    writer.start()
    started = json.loads(target.read_text())
    assert started["state"] == "checking"
    assert started["finished"] is False
    assert started["message"] == "checking candidates"
    writer.write({"model": "m", "state": "pulling", "completed": 5, "total": 10}, force=True)
    writer.finish("done", "m pulled")
    text = target.read_text()
    final = json.loads(text)
    assert final["finished"] is True
    assert (final["state"], final["message"], final["completed"]) == ("done", "m pulled", 5)
    # pollers (the model role's wait_for) look for this exact text
    assert text.endswith('"run_id": "run-7", "finished": true}')


def test_progress_file_under_a_regular_file_becomes_a_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    writer = module.ProgressFile(str(blocker / "p.json"), "")
    writer.write({"model": "m"}, force=True)
    assert writer.warning is not None
    assert str(blocker / "p.json") in writer.warning


def test_empty_progress_path_disables_writing(tmp_path: Path) -> None:
    writer = module.ProgressFile("", "")
    writer.write({"model": "m"}, force=True)
    assert writer.warning is None
    assert list(tmp_path.iterdir()) == []
