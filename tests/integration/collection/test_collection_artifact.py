"""The collection as a user gets it: `ansible-galaxy collection build`, then installed elsewhere.

The artifact is installed into an empty collections path outside the repository; every command
runs from a directory outside the repository, with only that path (no ansible.cfg of ours, no
collections from sys.path), so what works here works for anyone who installs the tarball.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from vastllm_lab.vastai.server import LabServer
from vastllm_lab.vastai.state import LabState, make_instance

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Installed:
    artifact: Path
    collections: Path  # the collections path holding only vastllm.stack
    workdir: Path  # an empty directory outside the repository, used as cwd
    env: dict[str, str]

    @property
    def collection(self) -> Path:
        return self.collections / "ansible_collections" / "vastllm" / "stack"

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(BIN / command[0]), *command[1:]],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"{' '.join(command)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def doc(self, *args: str) -> dict[str, Any]:
        """`ansible-doc --json` of one plugin: its merged documentation."""
        data: dict[str, Any] = json.loads(self.run("ansible-doc", "--json", *args).stdout)
        (entry,) = data.values()
        doc: dict[str, Any] = entry["doc"]
        return doc


def clean_env(base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "VAST_"))}
    config = base / "empty.cfg"  # ANSIBLE_CONFIG pointing to nothing of ours
    config.write_text("")
    env.update(
        ANSIBLE_CONFIG=str(config),
        ANSIBLE_COLLECTIONS_PATH=str(base / "collections"),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_HOME=str(base / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(base / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        HOME=str(base / "home"),  # no vastai CLI key file from the real home
    )
    (base / "home").mkdir()
    return env


def build_artifact(source: Path, out: Path, env: dict[str, str], cwd: Path | None = None) -> Path:
    """`ansible-galaxy collection build` of `source` into `out`; the one artifact it made."""
    command = [str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out)]
    build = subprocess.run(
        [*command, str(source)],
        cwd=cwd or source,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (artifact,) = out.glob("vastllm-stack-*.tar.gz")
    return artifact


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("collection")
    assert not base.resolve().is_relative_to(REPO.resolve())
    env = clean_env(base)
    workdir = base / "work"
    workdir.mkdir()
    artifact = build_artifact(REPO, base, env, cwd=workdir)
    result = Installed(artifact, base / "collections", workdir, env)
    result.run(
        "ansible-galaxy",
        "collection",
        "install",
        "--offline",
        str(artifact),
        "-p",
        str(result.collections),
    )
    assert (result.collection / "MANIFEST.json").is_file()
    return result


def test_artifact_ships_the_content_and_the_proxy_sources_but_no_development_files(
    installed: Installed,
) -> None:
    with tarfile.open(installed.artifact) as tar:
        names = set(tar.getnames())
    # the proxy role builds the proxy wheel from these, on the controller
    assert {"pyproject.toml", "README.md", "src/vastllm/proxy/__main__.py"} <= names
    assert {
        "meta/runtime.yml",
        "plugins/doc_fragments/vastai.py",
        "roles/proxy/tasks/main.yml",
    } <= names
    top = {name.split("/")[0] for name in names}
    assert not top & {"lab", "molecule", "benchmarks", "scripts", ".venv", ".cache", ".git"}
    assert not {n for n in names if n.startswith(("tests/unit", "tests/integration"))}


def test_local_inventory_data_and_env_files_never_ship(tmp_path: Path) -> None:
    """Keys live in host_vars, group_vars and .env files next to a checkout: none of them ship."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    source = tmp_path / "checkout"
    for name in filter(None, (entry.decode() for entry in tracked)):
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, target)
    planted = {
        "inventory/host_vars/gpu-1.yml": "vastai_api_key: planted-secret\n",
        "inventory/group_vars/all.yml": "proxy_api_key: planted-secret\n",
        ".env": "VAST_API_KEY=planted-secret\n",
        "secrets.env": "VAST_API_KEY=planted-secret\n",
        "inventory/hosts.ini": "gpu-1 ansible_password=planted-secret\n",
    }
    for name, text in planted.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    artifact = build_artifact(source, tmp_path, clean_env(tmp_path))
    with tarfile.open(artifact) as tar:
        names = set(tar.getnames())
        contents = b"".join(
            tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar.getmembers()
            if member.isfile()
        )
    assert not set(planted) & names
    assert b"planted-secret" not in contents
    assert "inventory/vastai.yml" in names


def test_ansible_doc_shows_the_ollama_model_module(installed: Installed) -> None:
    doc = installed.doc("vastllm.stack.ollama_model")
    assert Path(doc["filename"]).is_relative_to(installed.collection)
    assert {"name", "candidates", "state", "ollama_url"} <= set(doc["options"])


def test_ansible_doc_shows_vastai_instance_with_the_shared_options(installed: Installed) -> None:
    doc = installed.doc("vastllm.stack.vastai_instance")
    assert Path(doc["filename"]).is_relative_to(installed.collection)
    # api_key & co. come from the doc fragment vastllm.stack.vastai: it ships and resolves
    for option in ("api_key", "api_url", "timeout", "retries", "label", "max_dph"):
        assert doc["options"][option]["description"], option
    assert any("VAST_API_KEY" in line for line in doc["options"]["api_key"]["description"])


def test_ansible_doc_shows_the_vastai_inventory_plugin(installed: Installed) -> None:
    doc = installed.doc("-t", "inventory", "vastllm.stack.vastai")
    assert Path(doc["filename"]).is_relative_to(installed.collection)
    assert doc["options"]["api_key"]["env"] == [{"name": "VAST_API_KEY"}]
    assert {"statuses", "connect_with", "keyed_groups", "cache"} <= set(doc["options"])


def test_playbook_using_the_roles_and_modules_by_fqcn_passes_syntax_check(
    installed: Installed,
) -> None:
    play = [
        {
            "name": "Rent a GPU",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Rent",
                    "vastllm.stack.vastai_instance": {
                        "label": "x",
                        "max_dph": 0.5,
                        "image": "img",
                    },
                }
            ],
        },
        {
            "name": "Stack",
            "hosts": "all",
            "roles": ["vastllm.stack.ollama", "vastllm.stack.model", "vastllm.stack.proxy"],
            "tasks": [
                {
                    "name": "Model",
                    "vastllm.stack.ollama_model": {"name": "qwen2.5-coder:1.5b"},
                }
            ],
        },
    ]
    playbook = installed.workdir / "site.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    proc = installed.run("ansible-playbook", "--syntax-check", "-i", "localhost,", str(playbook))
    assert "playbook: " in proc.stdout


def plain(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__ansible_unsafe"}:
        return value["__ansible_unsafe"]
    return value


@pytest.fixture
def vastai_lab() -> Iterator[LabServer]:
    instances = [
        make_instance(9100001, label="gpu-a"),
        make_instance(9100002, label="gpu-b", gpu_name="RTX 3090"),
        make_instance(9100003, label="gpu-off", status="exited"),
    ]
    server = LabServer(LabState(api_keys=["lab-key"], instances=instances)).start()
    try:
        yield server
    finally:
        server.stop()


def test_inventory_plugin_lists_the_lab_double_instances(
    installed: Installed, vastai_lab: LabServer
) -> None:
    config = installed.workdir / "lab.vastai.yml"
    config.write_text(
        yaml.safe_dump(
            {"plugin": "vastllm.stack.vastai", "api_url": vastai_lab.url, "api_key": "lab-key"}
        )
    )
    proc = installed.run("ansible-inventory", "-i", str(config), "--list")
    inventory = json.loads(proc.stdout)
    assert sorted(inventory["vastai"]["hosts"]) == ["gpu-a", "gpu-b"]  # running only, by default
    hostvars = inventory["_meta"]["hostvars"]
    # ansible-inventory marks the API's strings as unsafe: {"__ansible_unsafe": "x"}
    assert plain(hostvars["gpu-b"]["vastai_gpu_name"]) == "RTX 3090"
    assert plain(hostvars["gpu-a"]["ansible_user"]) == "root"
    assert "lab-key" not in proc.stdout
