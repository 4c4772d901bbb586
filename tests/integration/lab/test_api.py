"""The Ollama lab double over HTTP on loopback: every endpoint, its shapes and its errors."""

import datetime
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

SMALL = "qwen3:0.6b"  # tools + thinking
CODER = "qwen2.5-coder:1.5b"  # tools, no thinking
FAST = {"VASTLLM_LAB_PULL_RATE": "1e13"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


HTTP = httpx.Client(timeout=10)  # one client: no per-call connection/TLS-context set-up


@pytest.fixture(scope="module", autouse=True)
def _close_client():
    yield
    HTTP.close()


def lines(response):
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def chat(url, body, timeout=10):
    return HTTP.post(f"{url}/api/chat", json=body, timeout=timeout)


def user(text):
    return [{"role": "user", "content": text}]


@pytest.fixture
def emu(ollama_emulator):
    return ollama_emulator(preload=[SMALL, CODER], env=FAST)


# --- plain endpoints ----------------------------------------------------------------------------


def test_root_head_version_and_unknown_paths(emu):
    root = HTTP.get(emu.url + "/")
    assert (root.status_code, root.text) == (200, "Ollama is running")
    head = HTTP.head(emu.url + "/")
    assert head.status_code == 200
    assert head.content == b""
    version = HTTP.get(emu.url + "/api/version")
    assert version.json() == {"version": version.json()["version"]}
    assert version.headers["content-length"] == str(len(version.content))
    missing = HTTP.get(emu.url + "/api/nothing")
    assert (missing.status_code, missing.text) == (404, "404 page not found")
    assert HTTP.get(emu.url + "/api/chat").status_code == 404  # wrong method


def test_tags_lists_present_models_with_details(emu):
    models = {m["name"]: m for m in HTTP.get(emu.url + "/api/tags").json()["models"]}
    assert set(models) == {SMALL, CODER}
    small = models[SMALL]
    assert small["model"] == SMALL
    assert small["size"] == 522_653_767
    assert len(small["digest"]) == 64
    assert small["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "qwen3",
        "families": ["qwen3"],
        "parameter_size": "751.63M",
        "quantization_level": "Q4_K_M",
    }
    assert datetime.datetime.fromisoformat(small["modified_at"]).tzinfo is not None


def test_show_reports_capabilities_and_context_length(emu):
    shown = HTTP.post(emu.url + "/api/show", json={"model": SMALL}).json()
    assert shown["capabilities"] == ["completion", "tools", "thinking"]
    assert shown["model_info"]["qwen3.context_length"] == 40_960
    assert shown["model_info"]["general.architecture"] == "qwen3"
    assert shown["details"]["family"] == "qwen3"
    assert "template" in shown
    assert "temperature" in shown["parameters"]
    assert shown["modified_at"]
    by_name = HTTP.post(emu.url + "/api/show", json={"name": "library/" + SMALL})
    assert by_name.json()["capabilities"] == shown["capabilities"]


def test_show_errors(emu):
    missing = HTTP.post(emu.url + "/api/show", json={"model": "llama3.1:8b"})
    assert missing.status_code == 404
    assert missing.json() == {"error": "model 'llama3.1:8b' not found"}
    assert HTTP.post(emu.url + "/api/show", json={}).json() == {"error": "model is required"}
    bad = HTTP.post(emu.url + "/api/show", content=b"{nope")
    assert bad.status_code == 400
    assert "invalid JSON" in bad.json()["error"]


# --- pull / delete ------------------------------------------------------------------------------


def test_pull_streams_progress_and_persists_across_restart(ollama_emulator):
    emu = ollama_emulator(env=FAST)
    response = HTTP.post(emu.url + "/api/pull", json={"model": "qwen2.5-coder:7b"}, timeout=30)
    assert response.status_code == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["content-type"] == "application/x-ndjson"
    events = lines(response)
    assert events[0] == {"status": "pulling manifest"}
    assert [e["status"] for e in events[-3:]] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    progress = [e for e in events if e.get("digest") == events[1]["digest"]]
    assert len(progress) >= 5
    digest = progress[0]["digest"]
    assert digest.startswith("sha256:")
    assert progress[0]["status"] == f"pulling {digest[7:19]}"
    completed = [e["completed"] for e in progress]
    assert completed == sorted(completed)
    assert completed[-1] == progress[0]["total"] == 4_683_087_519
    manifest = emu.models_dir + "/manifests/registry.ollama.ai/library/qwen2.5-coder/7b"
    with open(manifest) as handle:
        assert json.load(handle)["layers"][0]["digest"] == digest
    before = HTTP.get(emu.url + "/api/tags").json()["models"]
    emu.restart()
    after = HTTP.get(emu.url + "/api/tags").json()["models"]
    assert [(m["name"], m["digest"]) for m in after] == [(m["name"], m["digest"]) for m in before]


def test_pull_without_stream_and_repeat_pull(ollama_emulator):
    emu = ollama_emulator(env=FAST)
    first = HTTP.post(emu.url + "/api/pull", json={"model": CODER, "stream": False}, timeout=30)
    assert first.json() == {"status": "success"}
    digest = HTTP.get(emu.url + "/api/tags").json()["models"][0]["digest"]
    again = HTTP.post(emu.url + "/api/pull", json={"name": CODER}, timeout=30)
    events = lines(again)
    assert events[-1] == {"status": "success"}
    assert all(e.get("completed") == e.get("total") for e in events if "total" in e)
    assert HTTP.get(emu.url + "/api/tags").json()["models"][0]["digest"] == digest


def test_pull_alias_lists_the_alias_with_the_same_digest(ollama_emulator):
    emu = ollama_emulator(env=FAST)
    for name in ("qwen3-coder:30b", "qwen3-coder"):
        lines(HTTP.post(emu.url + "/api/pull", json={"model": name}, timeout=30))
    models = {m["name"]: m["digest"] for m in HTTP.get(emu.url + "/api/tags").json()["models"]}
    assert set(models) == {"qwen3-coder:30b", "qwen3-coder:latest"}
    assert models["qwen3-coder:30b"] == models["qwen3-coder:latest"]


def test_pull_unknown_model(emu):
    streamed = HTTP.post(emu.url + "/api/pull", json={"model": "nope:1b"})
    assert streamed.status_code == 200
    assert lines(streamed)[-1] == {"error": "pull model manifest: file does not exist"}
    whole = HTTP.post(emu.url + "/api/pull", json={"model": "nope:1b", "stream": False})
    assert whole.status_code == 500
    assert whole.json() == {"error": "pull model manifest: file does not exist"}
    invalid = HTTP.post(emu.url + "/api/pull", json={"model": "bad name"})
    assert (invalid.status_code, invalid.json()) == (400, {"error": "invalid model name"})
    assert HTTP.post(emu.url + "/api/pull", json={}).status_code == 400


def test_pull_into_an_unwritable_models_dir_names_path_and_errno(ollama_emulator, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    emu = ollama_emulator(models_dir=blocker / "models", env=FAST)
    events = lines(HTTP.post(emu.url + "/api/pull", json={"model": SMALL}))
    error = events[-1]["error"]
    assert error.startswith(f"mkdir {blocker}")
    assert error.endswith(": not a directory")
    assert HTTP.get(emu.url + "/api/tags").json() == {"models": []}


def test_delete(ollama_emulator):
    emu = ollama_emulator(preload=[CODER], env=FAST)
    HTTP.post(emu.url + "/api/pull", json={"model": SMALL, "stream": False}, timeout=30)
    response = HTTP.request("DELETE", emu.url + "/api/delete", json={"model": SMALL})
    assert (response.status_code, response.content) == (200, b"")
    assert [m["name"] for m in HTTP.get(emu.url + "/api/tags").json()["models"]] == [CODER]
    again = HTTP.request("DELETE", emu.url + "/api/delete", json={"model": SMALL})
    assert (again.status_code, again.json()) == (404, {"error": f"model '{SMALL}' not found"})
    emu.restart()  # deleted on disk too
    assert [m["name"] for m in HTTP.get(emu.url + "/api/tags").json()["models"]] == [CODER]
    assert not (Path(emu.models_dir) / "manifests/registry.ollama.ai/library/qwen3").exists()


def test_preloaded_models_come_back_after_a_restart(emu):
    HTTP.request("DELETE", emu.url + "/api/delete", json={"model": SMALL})
    emu.restart()  # VASTLLM_LAB_PRELOAD still names it: present at start again
    names = {m["name"] for m in HTTP.get(emu.url + "/api/tags").json()["models"]}
    assert names == {SMALL, CODER}


# --- chat ---------------------------------------------------------------------------------------


def test_chat_stream_and_whole_give_the_same_text(emu):
    body = {"model": SMALL, "messages": user("write a sort function")}
    streamed = chat(emu.url, body)
    assert streamed.headers["transfer-encoding"] == "chunked"
    chunks = lines(streamed)
    parts = [c["message"]["content"] for c in chunks[:-1]]
    assert all(c["done"] is False for c in chunks[:-1])
    assert all(len(p.split()) == 1 for p in parts)  # one chunk per word
    final = chunks[-1]
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    whole = chat(emu.url, {**body, "stream": False}).json()
    assert whole["message"] == {"role": "assistant", "content": "".join(parts)}
    assert whole["message"]["content"].startswith(f"Lab reply from {SMALL}: ")
    for key in ("prompt_eval_count", "eval_count"):
        assert whole[key] == final[key]
    # <|im_start|> user\n write a sort function <|im_end|>\n <|im_start|> assistant\n
    assert whole["prompt_eval_count"] == 9
    assert whole["eval_count"] == len(parts)
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(whole[key], int)
    assert whole["total_duration"] >= whole["eval_duration"] > 0
    other = chat(emu.url, {**body, "messages": user("something else"), "stream": False}).json()
    assert other["message"]["content"] != whole["message"]["content"]


def test_chat_options_truncate(emu):
    body = {"model": SMALL, "messages": user("hello"), "stream": False}
    full = chat(emu.url, body).json()["message"]["content"]
    cut = chat(emu.url, {**body, "options": {"num_predict": 2, "temperature": 0}}).json()
    assert cut["done_reason"] == "length"
    assert cut["eval_count"] == 2
    assert cut["message"]["content"] == " ".join(full.split()[:2])
    stopped = chat(emu.url, {**body, "options": {"stop": [":"]}}).json()
    assert stopped["message"]["content"] == full.split(":")[0]
    assert stopped["done_reason"] == "stop"
    bad = chat(emu.url, {**body, "options": {"num_predict": "x"}})
    assert bad.status_code == 400
    assert "num_predict" in bad.json()["error"]


def test_chat_thinking(emu):
    body = {"model": SMALL, "messages": user("think hard"), "think": True}
    chunks = lines(chat(emu.url, body))
    kinds = ["thinking" if c["message"].get("thinking") else "content" for c in chunks[:-1]]
    assert kinds == sorted(kinds, reverse=True)  # all thinking first, then content
    assert "thinking" in kinds
    whole = chat(emu.url, {**body, "stream": False}).json()["message"]
    thinking = "".join(c["message"].get("thinking", "") for c in chunks)
    assert whole["thinking"] == thinking
    assert whole["thinking"].startswith("Lab thinking")
    refused = chat(emu.url, {"model": CODER, "messages": user("x"), "think": True})
    assert refused.status_code == 400
    assert refused.json() == {"error": f'"{CODER}" does not support thinking'}


def test_chat_tool_call_round_trip(emu):
    body = {"model": CODER, "messages": user("use get_weather"), "tools": [WEATHER]}
    chunks = lines(chat(emu.url, body))
    with_calls = [c for c in chunks if c["message"].get("tool_calls")]
    assert len(with_calls) == 1  # the calls arrive in one chunk
    call = with_calls[0]["message"]["tool_calls"]
    assert call == [{"function": {"name": "get_weather", "arguments": {"city": "lab", "days": 1}}}]
    assert "".join(c["message"]["content"] for c in chunks) == ""
    whole = chat(emu.url, {**body, "stream": False}).json()
    assert whole["message"]["tool_calls"] == call
    assert whole["done_reason"] == "stop"
    follow = body["messages"] + [
        {"role": "assistant", "content": "", "tool_calls": call},
        {"role": "tool", "content": "rain, 12C", "tool_name": "get_weather"},
    ]
    answer = chat(emu.url, {**body, "messages": follow, "stream": False}).json()
    assert "rain, 12C" in answer["message"]["content"]
    assert "tool_calls" not in answer["message"]


def test_chat_accepts_images_and_format(emu):
    messages = [{"role": "user", "content": "describe", "images": ["aGVsbG8="]}]
    answer = chat(emu.url, {"model": SMALL, "messages": messages, "stream": False})
    assert answer.status_code == 200
    as_json = chat(
        emu.url, {"model": SMALL, "messages": user("x"), "format": "json", "stream": False}
    ).json()
    assert "reply" in json.loads(as_json["message"]["content"])


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"messages": []}, 400, "model is required"),
        ({"model": "llama3.1:8b"}, 404, 'model "llama3.1:8b" not found, try pulling it first'),
        ({"model": SMALL, "messages": "hi"}, 400, "messages must be a list of message objects"),
        ({"model": SMALL, "messages": [{"content": "x"}]}, 400, "messages[0]: role is required"),
        ({"model": SMALL, "stream": "yes"}, 400, "stream must be true or false"),
        ({"model": SMALL, "keep_alive": "later"}, 400, 'time: invalid duration "later"'),
        ({"model": SMALL, "tools": "x"}, 400, "tools must be a list of tool objects"),
    ],
)
def test_chat_errors(emu, body, status, error):
    response = chat(emu.url, body)
    assert response.status_code == status
    assert response.json() == {"error": error}


def test_chat_content_must_be_a_string(emu):
    response = chat(emu.url, {"model": SMALL, "messages": [{"role": "user", "content": [1]}]})
    assert response.status_code == 400
    assert "cannot unmarshal" in response.json()["error"]
    empty = HTTP.post(emu.url + "/api/chat", content=b"")
    assert (empty.status_code, empty.json()) == (400, {"error": "missing request body"})


# --- generate, loading and /api/ps --------------------------------------------------------------


def test_generate_loads_unloads_and_ps(emu):
    assert HTTP.get(emu.url + "/api/ps").json() == {"models": []}
    loaded = HTTP.post(emu.url + "/api/generate", json={"model": SMALL}).json()
    assert loaded["done_reason"] == "load"
    assert loaded["response"] == ""
    assert loaded["done"] is True
    running = HTTP.get(emu.url + "/api/ps").json()["models"]
    assert [m["name"] for m in running] == [SMALL]
    entry = running[0]
    assert entry["size_vram"] == entry["size"] == 522_653_767
    assert entry["context_length"] == 4096
    expires = datetime.datetime.fromisoformat(entry["expires_at"])
    left = expires - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(minutes=4) < left <= datetime.timedelta(minutes=5)
    forever = HTTP.post(emu.url + "/api/generate", json={"model": SMALL, "keep_alive": -1})
    assert forever.json()["done_reason"] == "load"
    expires = HTTP.get(emu.url + "/api/ps").json()["models"][0]["expires_at"]
    assert datetime.datetime.fromisoformat(expires).year > 2200
    unloaded = HTTP.post(emu.url + "/api/generate", json={"model": SMALL, "keep_alive": 0})
    assert unloaded.json()["done_reason"] == "unload"
    assert HTTP.get(emu.url + "/api/ps").json() == {"models": []}


def test_keep_alive_zero_on_chat_unloads_after_the_answer(emu):
    body = {"model": SMALL, "messages": user("x"), "stream": False, "keep_alive": 0}
    assert chat(emu.url, body).status_code == 200
    assert HTTP.get(emu.url + "/api/ps").json() == {"models": []}
    chat(emu.url, {**body, "keep_alive": "1h", "options": {"num_ctx": 8192}})
    entry = HTTP.get(emu.url + "/api/ps").json()["models"][0]
    assert entry["context_length"] == 8192


def test_chat_with_no_messages_loads_the_model(emu):
    answer = chat(emu.url, {"model": CODER, "messages": []}).json()
    assert answer["done_reason"] == "load"
    assert answer["message"] == {"role": "assistant", "content": ""}
    assert [m["name"] for m in HTTP.get(emu.url + "/api/ps").json()["models"]] == [CODER]


def test_generate_text_stream_and_whole(emu):
    body = {"model": SMALL, "prompt": "why is the sky blue?", "system": "be short"}
    chunks = lines(HTTP.post(emu.url + "/api/generate", json=body))
    text = "".join(c["response"] for c in chunks)
    final = chunks[-1]
    assert final["done"] is True
    # the template's tokens: 4 of the system text and markers, 8 of the prompt, 3 to close
    assert final["prompt_eval_count"] == 15
    whole = HTTP.post(emu.url + "/api/generate", json={**body, "stream": False}).json()
    assert whole["response"] == text
    assert whole["response"].startswith("Lab reply from")
    assert whole["eval_count"] == final["eval_count"] == len(text.split())
    thinking = HTTP.post(
        emu.url + "/api/generate", json={**body, "think": True, "stream": False}
    ).json()
    assert thinking["thinking"].startswith("Lab thinking")
    missing = HTTP.post(emu.url + "/api/generate", json={"model": "nope", "prompt": "x"})
    assert missing.status_code == 404


# --- lab control, logging, HTTP behaviour -------------------------------------------------------


def test_stats_count_requests_per_path(emu):
    emu.reset_stats()
    for _ in range(3):
        chat(emu.url, {"model": SMALL, "messages": user("x"), "stream": False})
    HTTP.get(emu.url + "/api/tags")
    assert emu.stats() == {"/api/chat": 3, "/api/tags": 1}  # /lab/ paths are not counted
    stats = HTTP.get(emu.url + "/lab/stats").json()
    assert stats["total"] == 4


def test_faults_endpoint_merges_validates_and_clears(emu):
    assert emu.get_faults() == {}
    assert emu.set_faults({"busy": True, "chunk_delay": 0.5}) == {"busy": True, "chunk_delay": 0.5}
    assert emu.set_faults({"chunk_delay": None}) == {"busy": True}
    bad = HTTP.post(emu.url + "/lab/faults", json={"flood": 1})
    assert bad.status_code == 400
    assert "unknown fault 'flood'" in bad.json()["error"]
    assert emu.get_faults() == {"busy": True}
    emu.clear_faults()
    assert emu.get_faults() == {}


def test_log_has_the_banner_and_one_line_per_request(emu):
    HTTP.get(emu.url + "/api/version")
    HTTP.post(emu.url + "/api/show", json={"model": "missing"})
    deadline = time.monotonic() + 5  # the line is written just after the answer is sent
    while '"/api/show"' not in emu.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    log = emu.log()
    assert "LAB DOUBLE of Ollama" in log
    assert 'msg="server config" env="map[' in log
    assert "OLLAMA_MODELS:" + emu.models_dir in log
    assert 'GET      "/api/version"' in log
    show = [line for line in log.splitlines() if '"/api/show"' in line]
    assert len(show) == 1
    assert "| 404 |" in show[0]


def test_keep_alive_connection_serves_several_requests(emu):
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        body = json.dumps({"model": SMALL, "messages": user("hi"), "stream": False}).encode()
        request = (
            f"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        stream = sock.makefile("rb")
        for _ in range(3):
            sock.sendall(request)
            status = stream.readline()
            assert status.startswith(b"HTTP/1.1 200")
            headers = {}
            while (line := stream.readline()) != b"\r\n":
                key, _, value = line.decode().partition(":")
                headers[key.lower()] = value.strip()
            payload = json.loads(stream.read(int(headers["content-length"])))
            assert payload["done"] is True


def test_concurrent_keep_alive_clients(emu):
    errors = []
    body = {"model": SMALL, "messages": user("concurrent"), "stream": True}

    def worker():
        try:
            with httpx.Client(timeout=20) as client:
                for _ in range(10):
                    chunks = lines(client.post(emu.url + "/api/chat", json=body))
                    assert chunks[-1]["done"] is True
        except Exception as exc:  # collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert emu.stats()["/api/chat"] == 320
