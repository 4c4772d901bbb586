"""The shared `ollama_emulator` fixture: start, faults, stats, restart, crash, cleanup."""

import httpx


def test_default_instance_answers_version(ollama_emulator):
    response = httpx.get(ollama_emulator.url + "/api/version", timeout=5)
    assert response.status_code == 200
    assert response.json()["version"]


def test_factory_preload_faults_stats_restart_and_crash(ollama_emulator):
    emu = ollama_emulator(preload=["qwen3:0.6b"], faults={"busy": True})
    chat = {"model": "qwen3:0.6b", "messages": [{"role": "user", "content": "x"}], "stream": False}
    assert httpx.post(emu.url + "/api/chat", json=chat, timeout=5).status_code == 503
    emu.clear_faults()
    assert emu.get_faults() == {}
    assert httpx.post(emu.url + "/api/chat", json=chat, timeout=5).status_code == 200
    assert emu.stats()["/api/chat"] == 2
    port = emu.port
    emu.set_faults({"chat_error": "boom"})
    emu.restart()  # faults from the start-up env come back (busy), run-time ones are gone
    assert emu.port == port
    assert emu.get_faults() == {"busy": True}
    assert emu.crash() == 1
    assert not emu.running


def test_processes_are_stopped_by_close(tmp_path):
    from vastllm_lab.ollama.process import LabOllamaProcess

    with LabOllamaProcess(models_dir=str(tmp_path / "m")) as emu:
        proc = emu.proc
        assert emu.running
    assert proc.poll() == 0  # SIGTERM: a clean exit
    assert "lab double stopped" in emu.log()


def test_session_instance_has_the_whole_catalog(ollama_emulator_session):
    models = httpx.get(ollama_emulator_session.url + "/api/tags", timeout=5).json()["models"]
    assert {m["name"] for m in models} == {
        "qwen3-coder:30b",
        "qwen2.5-coder:7b",
        "qwen2.5-coder:1.5b",
        "llama3.1:8b",
        "qwen3:0.6b",
    }
    assert ollama_emulator_session.get_faults() == {}


def test_the_double_does_not_outlive_a_killed_test_run(tmp_path):
    """A pytest run killed with SIGKILL cannot clean up: the double notices and stops."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys, time\n"
        "from vastllm_lab.ollama.process import LabOllamaProcess\n"
        f"emu = LabOllamaProcess(models_dir={str(tmp_path / 'm')!r}).start()\n"
        "print(emu.proc.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(child, signal.SIGKILL)
            raise AssertionError("the lab double outlived its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
