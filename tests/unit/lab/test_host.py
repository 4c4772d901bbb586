"""The lab host's inventory: what ansible-playbook is told about the container."""

from __future__ import annotations

from pathlib import Path

import yaml

from vastllm_lab.host import HostSpec, render_inventory


def _spec(tmp_path: Path) -> HostSpec:
    return HostSpec("lab-x", 2299, 8099, tmp_path / "state", tmp_path / "inv.yml")


def test_inventory_describes_an_ssh_reached_lab_host(tmp_path: Path) -> None:
    data = yaml.safe_load(render_inventory(_spec(tmp_path)))
    host = data["vastllm"]["hosts"]["lab-x"]
    assert host["ansible_host"] == "127.0.0.1"
    assert host["ansible_port"] == 2299
    assert host["ansible_user"] == "root"
    assert host["ansible_ssh_private_key_file"] == str(tmp_path / "state" / "id_ed25519")
    assert host["vastllm_lab"] is True


def test_inventory_points_ollama_at_the_lab_double_with_a_checksum(tmp_path: Path) -> None:
    host = yaml.safe_load(render_inventory(_spec(tmp_path)))["vastllm"]["hosts"]["lab-x"]
    assert host["ollama_archive_url"].startswith("file:///opt/vastllm-lab/mirror/")
    assert host["ollama_archive_checksum"] == "sha256:file:///opt/vastllm-lab/mirror/sha256sum.txt"


def test_inventory_exposes_the_proxy_only_with_a_key_and_holds_no_secret(tmp_path: Path) -> None:
    text = render_inventory(_spec(tmp_path))
    host = yaml.safe_load(text)["vastllm"]["hosts"]["lab-x"]
    # 0.0.0.0 inside the container makes the proxy role require (and generate) an API key.
    assert host["proxy_host"] == "0.0.0.0"
    assert host["proxy_public_url"] == "http://127.0.0.1:8099"
    assert "api_key" not in text
