"""Record files: append, rotation by size, bounded number of files, reading back."""

from __future__ import annotations

import json

from vastllm.monitor.records import RecordLog, load_state, save_state


def test_append_and_read(tmp_path):
    log = RecordLog(str(tmp_path / "state"), max_bytes=10_000, max_files=2)
    log.append({"kind": "round", "ts": 1.0})
    log.append({"kind": "restart", "ts": 2.0})
    log.append({"kind": "round", "ts": 3.0})
    assert [r["ts"] for r in log.read()] == [1.0, 2.0, 3.0]
    assert [r["ts"] for r in log.read(since=1.0)] == [2.0, 3.0]
    assert log.last()["ts"] == 3.0
    assert log.last("restart")["ts"] == 2.0
    assert log.last("idle_stop") is None


def test_rotation_keeps_a_bounded_number_of_files(tmp_path):
    log = RecordLog(str(tmp_path), max_bytes=4096, max_files=2)
    pad = "x" * 1000
    for i in range(20):
        log.append({"kind": "round", "ts": float(i), "pad": pad})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["monitor.jsonl", "monitor.jsonl.1", "monitor.jsonl.2"]
    for path in tmp_path.iterdir():
        assert path.stat().st_size <= 4096
    seen = [r["ts"] for r in log.read()]
    assert seen == sorted(seen)
    assert seen[-1] == 19.0
    assert len(seen) < 20  # the oldest were dropped


def test_read_skips_broken_lines(tmp_path):
    log = RecordLog(str(tmp_path), max_bytes=10_000, max_files=1)
    log.append({"kind": "round", "ts": 1.0})
    with open(log.path, "a") as handle:
        handle.write('[1]\n{"kind": "round", "ts": 2.0}\n{"kind": "rou')
    assert [r["ts"] for r in log.read()] == [1.0, 2.0]
    assert log.last()["ts"] == 2.0


def test_read_also_older_files_of_a_larger_setting(tmp_path):
    (tmp_path / "monitor.jsonl.3").write_text(json.dumps({"kind": "round", "ts": 1.0}) + "\n")
    (tmp_path / "monitor.jsonl").write_text(json.dumps({"kind": "round", "ts": 2.0}) + "\n")
    log = RecordLog(str(tmp_path), max_bytes=10_000, max_files=1)
    assert [r["ts"] for r in log.read()] == [1.0, 2.0]


def test_state_file(tmp_path):
    assert load_state(str(tmp_path / "none")) == {}
    save_state(str(tmp_path / "s"), {"idle": {"idle_since": 1.5}})
    assert load_state(str(tmp_path / "s")) == {"idle": {"idle_since": 1.5}}
    assert (tmp_path / "s" / "state.json").stat().st_mode & 0o777 == 0o600
    (tmp_path / "s" / "state.json").write_text("not json")
    assert load_state(str(tmp_path / "s")) == {}
