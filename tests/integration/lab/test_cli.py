"""`vastllm-lab ollama ...` command line: version, usage, client commands."""

import subprocess
import sys

import pytest

from vastllm_lab.ollama.cli import base_url, human_ago, human_size, main
from vastllm_lab.testing import free_port


def run(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "vastllm_lab", "ollama", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=30,
    )


def test_version_against_a_server_of_another_version(ollama_emulator):
    emu = ollama_emulator(env={"VASTLLM_LAB_VERSION": "7.7.7"})
    result = run("--version", env={"OLLAMA_HOST": emu.host})
    assert result.returncode == 0
    assert result.stdout == "ollama version is 7.7.7\n"
    assert "Warning: client version is " in result.stderr


def test_version_without_a_server(unused_port):
    result = run("-v", env={"OLLAMA_HOST": f"127.0.0.1:{unused_port}"})
    assert result.returncode == 0
    assert result.stdout.startswith("ollama version is ")
    assert "Warning: could not connect to a running Ollama instance" in result.stderr


def test_usage_and_argument_errors(capsys):
    assert main([]) == 2
    assert "Usage:" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "LAB" in capsys.readouterr().out.upper()
    assert main(["serve", "extra"]) == 2
    assert "serve takes no arguments" in capsys.readouterr().err
    assert main(["pull"]) == 2
    assert main(
        ["list"],
    ) in (0, 1)  # depends on a server at OLLAMA_HOST; never a traceback


def test_client_commands_report_an_unreachable_server(unused_port):
    for args in (["list"], ["ps"], ["pull", "qwen3:0.6b"], ["rm", "qwen3:0.6b"]):
        result = run(*args, env={"OLLAMA_HOST": f"127.0.0.1:{unused_port}"})
        assert result.returncode == 1
        assert result.stderr == "Error: could not connect to ollama app, is it running?\n"


def test_ps_lists_loaded_models(ollama_emulator):
    emu = ollama_emulator(preload=["qwen3:0.6b"])
    assert emu.request("POST", "/api/generate", {"model": "qwen3:0.6b"})[0] == 200
    result = run("ps", env={"OLLAMA_HOST": emu.host})
    assert result.returncode == 0
    header, row = result.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    assert row.startswith("qwen3:0.6b")
    assert "522.7 MB" in row


def test_bad_host_setting_is_a_clear_error():
    result = run("list", env={"OLLAMA_HOST": "127.0.0.1:notaport"})
    assert result.returncode == 1
    assert result.stderr.startswith("Error: OLLAMA_HOST: invalid port")


def test_pure_helpers():
    assert base_url({}) == "http://127.0.0.1:11434"
    assert base_url({"OLLAMA_HOST": "0.0.0.0:8080"}) == "http://127.0.0.1:8080"
    assert base_url({"OLLAMA_HOST": "[::1]:9"}) == "http://[::1]:9"
    assert human_size(18_556_701_152) == "18.6 GB"
    assert human_size(986_062_089) == "986.1 MB"
    assert human_size(12) == "12 B"
    assert human_ago(0, 30) == "Less than a minute ago"
    assert human_ago(0, 7200) == "2 hours ago"
    assert human_ago(0, 86400) == "1 day ago"


@pytest.fixture
def unused_port():
    return free_port()
