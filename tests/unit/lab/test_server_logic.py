"""The lab double's state logic without HTTP: pulls, loading/keep-alive, helpers."""

import datetime
import io
import time

import pytest

from vastllm_lab.ollama.catalog import builtin_catalog
from vastllm_lab.ollama.config import FOREVER, Settings
from vastllm_lab.ollama.state import LabOllama, entry_host, entry_repo, os_error_text
from vastllm_lab.ollama.store import ModelStore
from vastllm_lab.ollama.wire import rfc3339


@pytest.fixture
def app(tmp_path):
    settings = Settings(models_dir=str(tmp_path), pull_rate=1e15)
    return LabOllama(settings, builtin_catalog(), ModelStore(str(tmp_path)), io.StringIO())


def test_fresh_pull_then_repeat_pull(app):
    events = list(app.pull_events("qwen3:0.6b"))
    assert events[0] == {"status": "pulling manifest"}
    assert events[-1] == {"status": "success"}
    assert len([e for e in events if e.get("completed") is not None]) == 11 + 2
    digest = app.store.get("qwen3:0.6b").digest
    again = list(app.pull_events("qwen3:0.6b"))
    assert len(again) < len(events)
    assert again[-1] == {"status": "success"}
    assert app.store.get("qwen3:0.6b").digest == digest


def test_pull_faults_stop_before_storing(app):
    app.update_faults({"pull_fail_after": ["qwen3:0.6b"]})
    assert "connection reset by peer" in list(app.pull_events("qwen3:0.6b"))[-1]["error"]
    app.update_faults({"pull_fail_after": None, "disk_full": True})
    assert "no space left on device" in list(app.pull_events("qwen3:0.6b"))[-1]["error"]
    app.clear_faults()
    app.update_faults({"unknown_model": ["qwen3:0.6b"]})
    assert list(app.pull_events("qwen3:0.6b")) == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]
    assert app.store.list() == []


def test_load_keep_alive_and_unload(app):
    record = app.store.add_memory(builtin_catalog().resolve("qwen3:0.6b"))
    assert app.load(record, None) > 0
    assert app.load(record, None) == 0  # already loaded
    app.keep(record, FOREVER)
    ((name, loaded),) = app.loaded()
    assert name == "qwen3:0.6b"
    assert loaded.expires_at > 9e9
    assert loaded.context_length == 4096
    app.keep(record, 0.001)
    time.sleep(0.01)
    assert app.loaded() == []  # expired
    app.load(record, {"num_ctx": 10**9})
    assert app.loaded()[0][1].context_length == 40_960  # capped at the model's
    app.keep(record, 0)
    assert app.loaded() == []


def test_stats_and_faults_state(app):
    app.count("/api/chat")
    app.count("/api/chat")
    assert app.stats() == {"requests": {"/api/chat": 2}, "total": 2, "slots": {}}
    app.reset_stats()
    assert app.stats()["total"] == 0
    assert app.update_faults({"busy": True}) == {"busy": True}
    assert app.fault("busy") is True
    app.clear_faults()
    assert app.faults() == {}


def test_helpers():
    assert rfc3339(0) == "1970-01-01T00:00:00.000000Z"
    assert datetime.datetime.fromisoformat(rfc3339(1.5)).timestamp() == 1.5
    error = NotADirectoryError(20, "Not a directory", "/x/y")
    assert os_error_text("mkdir", error, "/fallback") == "mkdir /x/y: not a directory"
    assert os_error_text("write", OSError(28, "No space left on device"), "/m") == (
        "write /m: no space left on device"
    )
    assert entry_repo("qwen3:0.6b") == "library/qwen3"
    assert entry_repo("user/model:tag") == "user/model"
    assert entry_host("host.test/ns/model:tag") == "host.test"
    assert entry_host("qwen3:0.6b") == "registry.ollama.ai"
