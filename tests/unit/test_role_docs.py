"""The role READMEs are generated from meta/argument_specs.yml (scripts/role_docs.py): a README
whose generated part does not match its role's argument specs fails here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "role_docs.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False
    )


def test_role_readmes_are_up_to_date() -> None:
    run = _run("--check")
    assert run.returncode == 0, f"{run.stderr}Regenerate them with: python scripts/role_docs.py"


@pytest.fixture
def roles_copy(tmp_path: Path) -> Path:
    roles = tmp_path / "roles"
    for role in ("service", "ollama"):
        shutil.copytree(REPO / "roles" / role / "meta", roles / role / "meta")
        shutil.copy(REPO / "roles" / role / "README.md", roles / role / "README.md")
    return roles


def test_check_names_the_stale_readme_and_writing_fixes_it(roles_copy: Path) -> None:
    specs = roles_copy / "service" / "meta" / "argument_specs.yml"
    specs.write_text(specs.read_text().replace("Seconds to wait.", "Seconds to wait, at most."))

    stale = _run("--check", "--roles-dir", str(roles_copy))
    assert stale.returncode == 1
    assert "service/README.md" in stale.stderr
    assert "ollama" not in stale.stderr

    assert _run("--roles-dir", str(roles_copy)).returncode == 0
    assert "Seconds to wait, at most." in (roles_copy / "service" / "README.md").read_text()
    assert _run("--check", "--roles-dir", str(roles_copy)).returncode == 0


def test_hand_written_sections_are_kept(roles_copy: Path) -> None:
    readme = roles_copy / "ollama" / "README.md"
    before = readme.read_text()
    marker = "<!-- BEGIN role_docs"
    edited = before.replace(marker, "A hand-written note.\n\n" + marker, 1)
    readme.write_text(edited.replace("| `ollama_version` |", "| `x` |"))  # a stale generated part

    assert _run("--roles-dir", str(roles_copy)).returncode == 0
    assert readme.read_text() == edited


def test_every_entry_point_and_option_is_documented() -> None:
    import yaml

    for specs_file in sorted((REPO / "roles").glob("*/meta/argument_specs.yml")):
        readme = (specs_file.parents[1] / "README.md").read_text()
        for entry, spec in yaml.safe_load(specs_file.read_text())["argument_specs"].items():
            assert f"### Entry point `{entry}`" in readme, (specs_file, entry)
            for option in spec.get("options") or {}:
                assert f"| `{option}` |" in readme, (specs_file, entry, option)
