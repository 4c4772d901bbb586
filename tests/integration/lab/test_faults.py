"""Every fault switch of the Ollama lab double, and its start-up errors."""

import itertools
import json
import subprocess
import sys
import time

import httpx
import pytest

from vastllm_lab.ollama.process import LabOllamaError, LabOllamaProcess

SMALL = "qwen3:0.6b"
CODER = "qwen2.5-coder:1.5b"
FAST = {"VASTLLM_LAB_PULL_RATE": "1e13"}
HTTP = httpx.Client(timeout=10)


@pytest.fixture(scope="module", autouse=True)
def _close_client():
    yield
    HTTP.close()


def lines(response):
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def tags(url):
    return [m["name"] for m in HTTP.get(url + "/api/tags").json()["models"]]


def chat_body(stream=True):
    return {"model": SMALL, "messages": [{"role": "user", "content": "a b c"}], "stream": stream}


@pytest.fixture
def emu(ollama_emulator):
    return ollama_emulator(preload=[SMALL], env=FAST)


def test_unknown_model_hides_a_catalog_model(emu):
    emu.set_faults({"unknown_model": [CODER]})
    events = lines(HTTP.post(emu.url + "/api/pull", json={"model": CODER}))
    assert events[-1] == {"error": "pull model manifest: file does not exist"}
    assert tags(emu.url) == [SMALL]
    other = lines(HTTP.post(emu.url + "/api/pull", json={"model": "llama3.1:8b"}))
    assert other[-1] == {"status": "success"}


def test_pull_fail_after_emits_progress_then_a_reset(emu):
    emu.set_faults({"pull_fail_after": [CODER]})
    events = lines(HTTP.post(emu.url + "/api/pull", json={"model": CODER}))
    progress = [e for e in events if "completed" in e]
    assert len(progress) >= 3
    assert 0 < progress[-1]["completed"] < progress[-1]["total"]
    assert events[-1]["error"].endswith("connection reset by peer")
    assert "error" not in events[-2]
    assert tags(emu.url) == [SMALL]
    whole = HTTP.post(emu.url + "/api/pull", json={"model": CODER, "stream": False})
    assert whole.status_code == 500
    assert whole.json()["error"].endswith("connection reset by peer")


def test_disk_full_fails_pulls_after_some_progress(emu):
    emu.set_faults({"disk_full": True})
    events = lines(HTTP.post(emu.url + "/api/pull", json={"model": CODER}))
    assert any(e.get("completed", 0) > 0 for e in events)
    error = events[-1]["error"]
    assert error.startswith(f"write {emu.models_dir}/blobs/sha256-")
    assert error.endswith(": no space left on device")
    assert tags(emu.url) == [SMALL]
    emu.clear_faults()
    assert lines(HTTP.post(emu.url + "/api/pull", json={"model": CODER}))[-1] == {
        "status": "success"
    }


def test_chunk_delay_slows_chat_and_pull_streams(emu):
    emu.set_faults({"chunk_delay": 0.05})
    started = time.monotonic()
    chunks = lines(HTTP.post(emu.url + "/api/chat", json=chat_body()))
    assert time.monotonic() - started >= 0.05 * (len(chunks) - 1)
    started = time.monotonic()
    events = lines(HTTP.post(emu.url + "/api/pull", json={"model": CODER}))
    assert time.monotonic() - started >= 0.05 * 10
    assert events[-1] == {"status": "success"}


def test_chunk_delay_arrives_chunk_by_chunk(emu):
    emu.set_faults({"chunk_delay": 0.1})
    arrivals = []
    with HTTP.stream("POST", emu.url + "/api/chat", json=chat_body()) as response:
        for line in response.iter_lines():
            if line:
                arrivals.append(time.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(gaps) >= 5
    assert min(gaps[:-1]) >= 0.05  # flushed as produced, not buffered to the end


def test_crash_after_chunks_cuts_the_stream(emu):
    emu.set_faults({"crash_after_chunks": 3})
    received = []

    def read_stream():
        with HTTP.stream("POST", emu.url + "/api/chat", json=chat_body()) as response:
            for line in response.iter_lines():
                if line:
                    received.append(json.loads(line))

    with pytest.raises(httpx.RemoteProtocolError):
        read_stream()
    assert len(received) == 3
    assert all(c["done"] is False for c in received)
    with pytest.raises(httpx.RemoteProtocolError):
        HTTP.post(emu.url + "/api/chat", json=chat_body(stream=False))
    emu.clear_faults()  # the server itself is still up
    assert HTTP.post(emu.url + "/api/chat", json=chat_body(stream=False)).status_code == 200


def test_busy_answers_503_for_generation_only(emu):
    emu.set_faults({"busy": True})
    for path, body in (
        ("/api/chat", chat_body()),
        ("/api/generate", {"model": SMALL, "prompt": "x"}),
    ):
        response = HTTP.post(emu.url + path, json=body)
        assert response.status_code == 503
        assert response.json() == {
            "error": "server busy, please try again.  maximum pending requests exceeded"
        }
    assert HTTP.get(emu.url + "/api/tags").status_code == 200


def test_chat_error_answers_500_with_the_message(emu):
    emu.set_faults({"chat_error": "CUDA error: out of memory"})
    response = HTTP.post(emu.url + "/api/chat", json=chat_body())
    assert (response.status_code, response.json()) == (500, {"error": "CUDA error: out of memory"})
    generated = HTTP.post(emu.url + "/api/generate", json={"model": SMALL, "prompt": "x"})
    assert generated.status_code == 500
    load = HTTP.post(emu.url + "/api/generate", json={"model": SMALL})
    assert load.json()["done_reason"] == "load"  # loading is not a chat


def test_load_delay_only_on_the_first_load(emu):
    emu.set_faults({"load_delay": 0.3})
    body = chat_body(stream=False)
    started = time.monotonic()
    first = HTTP.post(emu.url + "/api/chat", json=body).json()
    assert time.monotonic() - started >= 0.3
    assert first["load_duration"] >= 300_000_000
    second = HTTP.post(emu.url + "/api/chat", json=body).json()
    assert second["load_duration"] == 0


def test_crash_fault_exits_with_code_1(emu):
    assert emu.crash() == 1
    with pytest.raises(httpx.ConnectError):
        HTTP.get(emu.url + "/api/version")
    assert "crash fault set" in emu.log()


def test_crash_fault_at_start_exits_with_code_1(tmp_path):
    emu = LabOllamaProcess(models_dir=str(tmp_path / "m"), faults={"crash": True})
    with pytest.raises(LabOllamaError, match="exited with code 1"):
        emu.start()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VASTLLM_LAB_FAULTS": "flood=1"}, "unknown fault 'flood'"),
        ({"VASTLLM_LAB_PRELOAD": "nope:1b"}, "'nope:1b' is not in the lab catalog"),
        ({"VASTLLM_LAB_CATALOG": "/nonexistent/catalog.json"}, "cannot read catalog file"),
        ({"OLLAMA_KEEP_ALIVE": "soon"}, "OLLAMA_KEEP_ALIVE"),
    ],
)
def test_bad_start_up_settings_exit_1_with_a_clear_error(tmp_path, env, message):
    result = subprocess.run(
        [sys.executable, "-m", "vastllm_lab", "ollama", "serve"],
        env={
            "PATH": "/usr/bin:/bin",
            "OLLAMA_HOST": "127.0.0.1:0",
            "OLLAMA_MODELS": str(tmp_path),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_a_clear_error(emu, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vastllm_lab", "ollama", "serve"],
        env={"PATH": "/usr/bin:/bin", "OLLAMA_HOST": emu.host, "OLLAMA_MODELS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"Error: listen tcp {emu.host}: bind: " in result.stderr
    assert "address already in use" in result.stderr.lower()


def test_catalog_file_adds_models(ollama_emulator, tmp_path):
    catalog = tmp_path / "catalog.json"
    catalog.write_text(
        json.dumps([{"name": "tiny:1m", "size": 1_000_000, "capabilities": ["completion"]}])
    )
    emu = ollama_emulator(env={"VASTLLM_LAB_CATALOG": str(catalog), **FAST})
    events = lines(HTTP.post(emu.url + "/api/pull", json={"model": "tiny:1m"}))
    assert events[-1] == {"status": "success"}
    shown = HTTP.post(emu.url + "/api/show", json={"model": "tiny:1m"}).json()
    assert shown["capabilities"] == ["completion"]
    refused = HTTP.post(
        emu.url + "/api/chat",
        json={"model": "tiny:1m", "messages": [], "tools": [{"function": {"name": "f"}}]},
    )
    assert refused.status_code == 400
    assert refused.json() == {"error": '"tiny:1m" does not support tools'}
