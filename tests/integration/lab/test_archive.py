"""The release-like archive: layout, sha256sum.txt, reproducibility, and bin/ollama running."""

import ast
import hashlib
import io
import json
import re
import subprocess
import tarfile
import urllib.request

import pytest

from vastllm_lab.ollama import VERSION
from vastllm_lab.ollama.archive import ArchiveError, build_archive, bundles_llama_server, main
from vastllm_lab.ollama.process import LabOllamaProcess

SYSTEM_PATH = "/usr/bin:/bin"  # bin/ollama must run on the system python3, without our venv


def _members(path):
    if path.endswith(".tar.zst"):
        data = subprocess.run(["zstd", "-dc", path], capture_output=True, check=True).stdout
        return tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    return tarfile.open(path, mode="r:gz")


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    out = tmp_path_factory.mktemp("archive")
    path, _ = build_archive("0.9.7", str(out), "tar.zst")
    root = out / "root"
    root.mkdir()
    with _members(path) as tar:
        tar.extractall(root, filter="tar")
    return root


@pytest.mark.parametrize("fmt", ["tar.zst", "tgz"])
def test_layout_like_the_official_release(tmp_path, fmt):
    path, _ = build_archive("0.9.7", str(tmp_path), fmt)
    assert path == str(tmp_path / f"ollama-linux-amd64.{fmt}")
    with _members(path) as tar:
        infos = {m.name: m for m in tar.getmembers()}
        names = list(infos)
        assert names == sorted(names)
        assert infos["bin/ollama"].mode == 0o755
        assert infos["bin/ollama"].isfile()
        assert infos["lib/ollama"].isdir()
        for module in ("server", "state", "wire", "handlers", "cli", "_version"):
            assert f"lib/ollama/vastllm_lab/ollama/{module}.py" in infos
        assert not any(n.startswith("lib/ollama/vastllm/") for n in names)
        assert all(m.uid == 0 and m.gid == 0 and m.mtime == 1704067200 for m in infos.values())
        assert not any("__pycache__" in n or n.endswith(".toml") for n in names)
        assert "lib/ollama/llama-server" not in infos  # releases before 0.30 have none
        script = tar.extractfile("bin/ollama").read().decode()
        assert script.startswith("#!/usr/bin/env python3\n")
        notice = tar.extractfile("lib/ollama/LAB_DOUBLE.txt").read().decode()
        assert "NOT OLLAMA" in notice
        assert "0.9.7" in notice
        version = tar.extractfile("lib/ollama/vastllm_lab/ollama/_version.py").read().decode()
        assert "VERSION = '0.9.7'" in version


@pytest.mark.parametrize("version", ["0.30.0", "0.34.2", "1.0.0"])
def test_releases_from_0_30_bundle_llama_server(tmp_path, version):
    """Ollama >= 0.30 runs GGUF models through lib/ollama/llama-server, shipped in the archive."""
    path, _ = build_archive(version, str(tmp_path), "tgz")
    with _members(path) as tar:
        info = tar.getmember("lib/ollama/llama-server")
        assert info.isfile()
        assert info.mode == 0o755
        assert [n for n in tar.getnames() if "llama-" in n] == ["lib/ollama/llama-server"]
        tar.extractall(tmp_path / "root", filter="tar")
    server = tmp_path / "root" / "lib" / "ollama" / "llama-server"
    assert version in server.read_text()
    assert "NOT llama.cpp" in server.read_text()
    shown = subprocess.run([str(server), "--version"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0
    assert "lab double" in shown.stdout
    run = subprocess.run([str(server), "-m", "x.gguf"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert "not llama.cpp" in run.stderr


def test_which_versions_bundle_llama_server():
    assert [
        v
        for v in ("0.21.0", "0.29.9", "0.30.0-rc1", "0.30.0", "v0.34.2", "0.9.7", "lab")
        if bundles_llama_server(v)
    ] == ["0.30.0-rc1", "0.30.0", "v0.34.2"]
    # the double reports the role's pinned default, whose release bundles llama-server
    assert bundles_llama_server(VERSION)


def test_sha256sum_file_lists_each_format_like_the_release(tmp_path):
    zst, zst_sha = build_archive("1.0.0", str(tmp_path), "tar.zst")
    tgz, tgz_sha = build_archive("1.0.0", str(tmp_path), "tgz")
    lines = (tmp_path / "sha256sum.txt").read_text().splitlines()
    assert lines == [
        f"{zst_sha}  ./ollama-linux-amd64.tar.zst",
        f"{tgz_sha}  ./ollama-linux-amd64.tgz",
    ]
    for path, sha in ((zst, zst_sha), (tgz, tgz_sha)):
        with open(path, "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == sha
    # sha256sum itself accepts the file
    check = subprocess.run(["sha256sum", "-c", "sha256sum.txt"], cwd=tmp_path, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("fmt", ["tar.zst", "tgz"])
def test_building_twice_gives_the_same_bytes(tmp_path, fmt):
    _, first = build_archive("0.9.7", str(tmp_path / "a"), fmt)
    _, second = build_archive("0.9.7", str(tmp_path / "b"), fmt)
    _, other = build_archive("0.9.8", str(tmp_path / "c"), fmt)
    assert first == second
    assert other != first


def test_bundled_code_is_python_3_9_syntax(unpacked):
    files = [*sorted((unpacked / "lib" / "ollama").rglob("*.py")), unpacked / "bin" / "ollama"]
    assert len(files) > 10
    for path in files:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


def test_cli_reports_bad_arguments(tmp_path, capsys):
    assert main(["--version", "bad version", "--output", str(tmp_path)]) == 1
    assert "invalid version" in capsys.readouterr().err
    with pytest.raises(ArchiveError, match="unknown arch"):
        build_archive("1.0", str(tmp_path), "tgz", "sparc")
    target = tmp_path / "file"
    target.write_text("")
    assert main(["--version", "1.0", "--output", str(target / "sub"), "--format", "tgz"]) == 1
    assert "cannot write to" in capsys.readouterr().err


def test_cli_prints_path_and_sha(tmp_path, capsys):
    assert main(["--version", "1.2.3", "--output", str(tmp_path), "--format", "tgz"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(tmp_path / "ollama-linux-amd64.tgz")
    assert re.fullmatch(r"sha256 [0-9a-f]{64}", out[1])


def test_bin_ollama_version_without_server(unpacked):
    result = subprocess.run(
        [str(unpacked / "bin" / "ollama"), "--version"],
        capture_output=True,
        text=True,
        env={"PATH": SYSTEM_PATH, "OLLAMA_HOST": "127.0.0.1:9"},
        timeout=30,
    )
    assert result.returncode == 0
    assert result.stdout == "ollama version is 0.9.7\n"
    assert "could not connect to a running Ollama instance" in result.stderr


def test_bin_ollama_unknown_command_is_usage_error(unpacked):
    result = subprocess.run(
        [str(unpacked / "bin" / "ollama"), "frobnicate"],
        capture_output=True,
        text=True,
        env={"PATH": SYSTEM_PATH},
        timeout=30,
    )
    assert result.returncode == 2
    assert "Usage:" in result.stderr


def test_bin_ollama_serve_and_client_commands(unpacked, tmp_path):
    ollama = str(unpacked / "bin" / "ollama")
    with LabOllamaProcess(
        models_dir=str(tmp_path / "models"),
        command=[ollama, "serve"],
        env={"PATH": SYSTEM_PATH, "VASTLLM_LAB_PULL_RATE": "1e12"},
    ) as emu:
        with urllib.request.urlopen(emu.url + "/api/version", timeout=5) as response:
            assert json.loads(response.read()) == {"version": "0.9.7"}
        env = {"PATH": SYSTEM_PATH, "OLLAMA_HOST": emu.host}

        def run(*args):
            return subprocess.run(
                [ollama, *args], capture_output=True, text=True, env=env, timeout=30
            )

        version = run("-v")
        assert (version.returncode, version.stdout, version.stderr) == (
            0,
            "ollama version is 0.9.7\n",
            "",
        )
        pull = run("pull", "qwen3:0.6b")
        assert pull.returncode == 0, pull.stderr
        assert pull.stdout.splitlines()[-1] == "success"
        listing = run("list")
        assert listing.returncode == 0
        assert listing.stdout.splitlines()[1].startswith("qwen3:0.6b")
        missing = run("pull", "no-such-model:1b")
        assert missing.returncode == 1
        assert "Error: pull model manifest: file does not exist" in missing.stderr
        removed = run("rm", "qwen3:0.6b")
        assert (removed.returncode, removed.stdout) == (0, "deleted 'qwen3:0.6b'\n")
        again = run("rm", "qwen3:0.6b")
        assert again.returncode == 1
        assert "not found" in again.stderr
        assert "LAB DOUBLE" in emu.log()
    down = run("list")
    assert down.returncode == 1
    assert "could not connect" in down.stderr


def _python39():
    import shutil
    from pathlib import Path

    candidates = [str(p) for p in sorted(Path("/root/.pyenv/versions").glob("3.9.*/bin/python3.9"))]
    candidates += [c for c in (shutil.which("python3.9"),) if c]
    for candidate in candidates:
        works = subprocess.run([candidate, "-c", "pass"], capture_output=True, check=False)
        if works.returncode == 0:
            return candidate
    return None


PYTHON39 = _python39()


@pytest.mark.skipif(PYTHON39 is None, reason="no Python 3.9 interpreter on this machine")
def test_bundled_double_runs_on_python_3_9(unpacked, tmp_path):
    """Managed hosts may have only an old python3: the whole API must work on 3.9."""
    python = PYTHON39
    with LabOllamaProcess(
        models_dir=str(tmp_path / "models"),
        command=[python, str(unpacked / "bin" / "ollama"), "serve"],
        env={"PATH": SYSTEM_PATH, "VASTLLM_LAB_PULL_RATE": "1e13"},
    ) as emu:

        def call(method, path, body=None):
            status, data = emu.request(method, path, body)
            assert status == 200, data
            return [json.loads(line) for line in data.decode().splitlines() if line.strip()]

        assert call("GET", "/api/version") == [{"version": "0.9.7"}]
        assert call("POST", "/api/pull", {"model": "qwen3:0.6b"})[-1] == {"status": "success"}
        tool = {"type": "function", "function": {"name": "f", "parameters": {"required": []}}}
        chunks = call(
            "POST",
            "/api/chat",
            {
                "model": "qwen3:0.6b",
                "messages": [{"role": "user", "content": "f"}],
                "tools": [tool],
            },
        )
        assert chunks[0]["message"]["tool_calls"][0]["function"]["name"] == "f"
        text = call("POST", "/api/generate", {"model": "qwen3:0.6b", "prompt": "x", "think": True})
        assert text[-1]["done"] is True
        assert call("GET", "/api/ps")[0]["models"][0]["name"] == "qwen3:0.6b"
        assert call("POST", "/api/show", {"model": "qwen3:0.6b"})[0]["capabilities"]
        assert call("POST", "/lab/faults", {"busy": True}) == [{"busy": True}]
        assert emu.request("POST", "/api/chat", {"model": "qwen3:0.6b"})[0] == 503
        assert emu.request("DELETE", "/api/delete", {"model": "qwen3:0.6b"})[0] == 200
        assert call("GET", "/api/tags") == [{"models": []}]
    assert emu.proc.returncode == 0
