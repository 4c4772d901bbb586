"""Constants shared by the CLI integration tests and their conftest (imported by module name, so
that no test imports `conftest`, which names a different module in each test folder)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
LAB_KEY = REPO / ".lab" / "id_ed25519"
LAB_VARS = {
    "vastllm_lab": True,
    "ollama_archive_url": "file:///opt/vastllm-lab/mirror/ollama-linux-amd64.tar.zst",
    "ollama_archive_checksum": "sha256:file:///opt/vastllm-lab/mirror/sha256sum.txt",
    "proxy_host": "0.0.0.0",
    "proxy_port": 8000,
    "ansible_python_interpreter": "/usr/bin/python3",
}
