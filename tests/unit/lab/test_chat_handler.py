"""The lab double's /api/chat handler in process (a LabServer thread): the prompt it counts, the
double's own work in /lab/stats, and the pacing of a rated answer."""

import io
import json
import threading
import time
import urllib.request

import pytest

from vastllm_lab.ollama.catalog import builtin_catalog
from vastllm_lab.ollama.config import Settings
from vastllm_lab.ollama.handlers import Handler
from vastllm_lab.ollama.prompt import prompt_tokens
from vastllm_lab.ollama.state import LabOllama
from vastllm_lab.ollama.store import ModelStore
from vastllm_lab.ollama.wire import LabServer

MODEL = "qwen3:0.6b"


@pytest.fixture
def lab(tmp_path):
    settings = Settings(models_dir=str(tmp_path), context_length=8192)
    app = LabOllama(settings, builtin_catalog(), ModelStore(str(tmp_path)), io.StringIO())
    app.store.add_memory(builtin_catalog().resolve(MODEL))
    server = LabServer(("127.0.0.1", 0), app, Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def chat(url, messages, stream=False):
    body = json.dumps({"model": MODEL, "messages": messages, "stream": stream}).encode()
    request = urllib.request.Request(f"{url}/api/chat", data=body, method="POST")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as answer:
        first = answer.readline()
        first_at = time.perf_counter() - started
        rest = answer.read().splitlines()
    lines = [json.loads(line) for line in [first, *rest] if line.strip()]
    return lines, first_at, time.perf_counter() - started


def test_a_second_system_message_is_not_in_the_prompt(lab):
    _, url = lab
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": " ".join(["agents"] * 50)},
    ]
    (answer,), _, _ = chat(url, messages)
    assert answer["prompt_eval_count"] == len(prompt_tokens(messages[:2], [])) == 11


def test_the_doubles_own_work_is_counted_per_request(lab):
    app, url = lab
    messages = [{"role": "user", "content": "hi"}]
    chat(url, messages)
    (slot,) = app.stats()["slots"][MODEL]
    assert slot["requests"] == 1
    assert 0 < slot["work_ns"] < 5e9
    chat(url, [*messages, {"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}])
    assert app.stats()["slots"][MODEL][0]["work_ns"] > slot["work_ns"]


def test_a_rated_answer_is_paced_from_the_end_of_the_evaluation(lab):
    app, url = lab
    app.update_faults({"prompt_tokens_per_second": 1000, "generation_tokens_per_second": 100})
    messages = [{"role": "user", "content": " ".join(["w"] * 60)}]
    lines, first_at, total = chat(url, messages, stream=True)
    evaluated = lines[-1]["prompt_eval_count"]
    chunks = len(lines) - 1
    assert first_at >= evaluated / 1000 + 1 / 100
    assert total >= evaluated / 1000 + chunks / 100
    assert lines[-1]["eval_duration"] >= chunks / 100 * 1e9
