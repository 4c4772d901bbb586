"""The ollama role's install path on a real container (no systemd, as on vast.ai).

The lab double is packaged like the official release: fresh install, upgrade in place, and the
failures a user must be told about in plain words (bad checksum, wrong archive, unwritable models
directory), leaving the running version untouched."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vastllm_lab.ollama.archive import build_archive, compress, update_sha256sums
from vastllm_lab.testing import ansible_env, docker_available

REPO = Path(__file__).resolve().parents[3]
IMAGE = "vastllm/lab-base:bookworm"
MIRROR = "/opt/vastllm-lab/mirror"


pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(
        not docker_available(IMAGE) and os.environ.get("CI") != "true",
        reason="needs Docker and the lab image (scripts/setup.sh)",
    ),
]


@dataclass
class Run:
    rc: int
    out: str


@dataclass
class Host:
    name: str
    mirror: Path

    def sh(self, cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "exec", self.name, "sh", "-c", cmd],
            capture_output=True,
            text=True,
            check=False,
        )

    def stage(self, version: str) -> str:
        """Put the lab double archive of `version` at a per-version mirror path; return its dir."""
        out = self.mirror / version
        subprocess.run(
            [sys.executable, "-m", "vastllm_lab", "ollama", "build-archive", "--version", version,
             "--output", str(out)],
            check=True, capture_output=True,
        )  # fmt: skip
        self.sh(f"mkdir -p {MIRROR}/{version}")
        for name in ("ollama-linux-amd64.tar.zst", "sha256sum.txt"):
            subprocess.run(
                ["docker", "cp", str(out / name), f"{self.name}:{MIRROR}/{version}/{name}"],
                check=True,
            )
        return f"{MIRROR}/{version}"

    def play(self, tmp_path: Path, **extra: object) -> Run:
        playbook = tmp_path / f"play-{uuid.uuid4().hex[:6]}.yml"
        playbook.write_text(
            "- hosts: all\n  gather_facts: true\n  roles:\n    - role: vastllm.stack.ollama\n"
        )
        extra_vars = tmp_path / f"vars-{uuid.uuid4().hex[:6]}.json"
        extra_vars.write_text(json.dumps(extra))
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("ansible-playbook")), "-i", f"{self.name},",
             "-c", "community.docker.docker", "-e", f"@{extra_vars}", str(playbook)],
            cwd=REPO, capture_output=True, text=True, check=False,
            env=ansible_env(REPO, ANSIBLE_PIPELINING="1"),
        )  # fmt: skip
        return Run(proc.returncode, proc.stdout + proc.stderr)

    def running_version(self) -> str:
        out = self.sh("curl -sf http://127.0.0.1:11434/api/version").stdout
        return json.loads(out)["version"] if out else ""

    def ollama_pid(self) -> str:
        return self.sh("supervisorctl pid ollama").stdout.strip()


def _vars(mirror_dir: str, version: str, **more: object) -> dict[str, object]:
    return {
        "ollama_version": version,
        "ollama_archive_url": f"file://{mirror_dir}/ollama-linux-amd64.tar.zst",
        "ollama_archive_checksum": f"sha256:file://{mirror_dir}/sha256sum.txt",
        **more,
    }


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    name = f"vastllm-roletest-{uuid.uuid4().hex[:8]}"
    volume = f"{name}-ro"
    subprocess.run(["docker", "volume", "create", volume], check=True, capture_output=True)
    subprocess.run(
        ["docker", "run", "-d", "--init", "--name", name, "-v", f"{volume}:/readonly:ro", IMAGE],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield Host(name, tmp_path_factory.mktemp("mirror"))
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "volume", "rm", volume], capture_output=True, check=False)


def test_bad_checksum_fails_clearly_and_installs_nothing(host: Host, tmp_path: Path) -> None:
    mirror = host.stage("0.21.0")
    run = host.play(
        tmp_path, **_vars(mirror, "0.21.0", ollama_archive_checksum="sha256:" + "0" * 64)
    )
    assert run.rc != 0
    assert "does not match" in run.out or "checksum" in run.out.lower(), run.out[-3000:]
    assert host.sh("test -e /usr/local/bin/ollama").returncode != 0


def test_archive_of_another_version_is_refused(host: Host, tmp_path: Path) -> None:
    mirror = host.stage("0.20.0")
    run = host.play(tmp_path, **_vars(mirror, "0.21.0"))
    assert run.rc != 0
    assert "does not hold Ollama 0.21.0" in run.out, run.out[-3000:]
    assert host.sh("test -e /usr/local/bin/ollama").returncode != 0


def test_install_then_same_version_changes_nothing(host: Host, tmp_path: Path) -> None:
    mirror = host.stage("0.21.0")
    first = host.play(tmp_path, **_vars(mirror, "0.21.0"))
    assert first.rc == 0, first.out[-3000:]
    assert host.running_version() == "0.21.0"
    pid = host.ollama_pid()
    again = host.play(tmp_path, **_vars(mirror, "0.21.0"))
    assert again.rc == 0, again.out[-3000:]
    assert " changed=0 " in again.out, again.out[-3000:]
    assert host.ollama_pid() == pid


def test_failed_upgrade_leaves_the_running_version(host: Host, tmp_path: Path) -> None:
    mirror = host.stage("0.21.1")
    pid = host.ollama_pid()
    run = host.play(
        tmp_path, **_vars(mirror, "0.21.1", ollama_archive_checksum="sha256:" + "f" * 64)
    )
    assert run.rc != 0
    assert host.running_version() == "0.21.0"
    assert host.ollama_pid() == pid
    assert "version is 0.21.0" in host.sh("/usr/local/bin/ollama --version").stdout


def test_upgrade_in_place_restarts_the_server(host: Host, tmp_path: Path) -> None:
    mirror = host.stage("0.21.1")
    pid = host.ollama_pid()
    run = host.play(tmp_path, **_vars(mirror, "0.21.1"))
    assert run.rc == 0, run.out[-3000:]
    assert host.running_version() == "0.21.1"
    assert host.ollama_pid() != pid


def test_config_change_restarts_and_no_change_does_not(host: Host, tmp_path: Path) -> None:
    mirror = f"{MIRROR}/0.21.1"
    pid = host.ollama_pid()
    run = host.play(tmp_path, **_vars(mirror, "0.21.1", ollama_num_parallel=4))
    assert run.rc == 0, run.out[-3000:]
    # the service role applied the new definition itself (supervisorctl update restarts the program)
    assert re.search(
        r"TASK \[vastllm.stack.service : Load the definition of ollama\][^\n]*\nchanged:", run.out
    )
    assert 'OLLAMA_NUM_PARALLEL="4"' in host.sh("cat /etc/supervisor/conf.d/ollama.conf").stdout
    assert host.ollama_pid() != pid


def test_unwritable_models_dir_is_named(host: Host, tmp_path: Path) -> None:
    run = host.play(tmp_path, **_vars(f"{MIRROR}/0.21.1", "0.21.1", ollama_models_path="/readonly"))
    assert run.rc != 0
    assert "The Ollama models directory /readonly (OLLAMA_MODELS) is not writable" in run.out, (
        run.out[-3000:]
    )


def test_bad_settings_are_refused_before_anything_runs(host: Host, tmp_path: Path) -> None:
    run = host.play(
        tmp_path, **_vars(f"{MIRROR}/0.21.1", "0.21.1", ollama_kv_cache_type="q4_0",
                          ollama_flash_attention=False)
    )  # fmt: skip
    assert run.rc != 0
    assert "quantized KV cache needs ollama_flash_attention" in run.out


# -- the 0.30+ layout: the archive must bundle lib/ollama/llama-server ------------------------


def test_default_release_installs_with_llama_server(host: Host, tmp_path: Path) -> None:
    mirror = host.stage("0.34.2")
    run = host.play(tmp_path, **_vars(mirror, "0.34.2"))
    assert run.rc == 0, run.out[-3000:]
    assert host.running_version() == "0.34.2"
    assert host.sh("test -x /usr/local/lib/ollama/llama-server").returncode == 0
    conf = host.sh("cat /etc/supervisor/conf.d/ollama.conf").stdout
    assert 'OLLAMA_NUM_PARALLEL="1"' in conf, conf  # auto: no GPU here, so one slot
    assert "auto: 0 MiB of VRAM" in run.out


def test_archive_without_llama_server_is_refused(host: Host, tmp_path: Path) -> None:
    out = tmp_path / "bad"
    path, _ = build_archive("0.34.3", str(out), "tgz")
    buf = io.BytesIO()
    with (
        tarfile.open(path, "r:gz") as tar,
        tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as stripped,
    ):
        for member in tar.getmembers():
            if member.name != "lib/ollama/llama-server":
                stripped.addfile(member, tar.extractfile(member) if member.isfile() else None)
    data = compress(buf.getvalue(), "tar.zst")
    (out / "ollama-linux-amd64.tar.zst").write_bytes(data)
    update_sha256sums(
        str(out / "sha256sum.txt"), "ollama-linux-amd64.tar.zst", hashlib.sha256(data).hexdigest()
    )
    host.sh(f"mkdir -p {MIRROR}/bad")
    for name in ("ollama-linux-amd64.tar.zst", "sha256sum.txt"):
        subprocess.run(
            ["docker", "cp", str(out / name), f"{host.name}:{MIRROR}/bad/{name}"], check=True
        )
    run = host.play(tmp_path, **_vars(f"{MIRROR}/bad", "0.34.3"))
    assert run.rc != 0
    assert "has no executable lib/ollama/llama-server" in run.out, run.out[-3000:]
    assert host.running_version() == "0.34.2"
