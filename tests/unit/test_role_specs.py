"""Each role's documented interface matches what it really reads: every default is in
meta/argument_specs.yml with the same default, every spec'd option with a default has it in
defaults/main.yml (as prometheus-community's lint_arguments_spec does), and every entry point
another role or playbook calls (`tasks_from`) has an argument spec."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
ROLE_NAMES = sorted(p.name for p in ROLES.iterdir() if (p / "meta" / "argument_specs.yml").exists())


def _spec_options(role: str) -> dict[str, dict]:
    spec = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    options: dict[str, dict] = {}
    for entry in spec["argument_specs"].values():
        options.update(entry.get("options") or {})
    return options


def test_every_role_has_specs_and_defaults() -> None:
    assert set(ROLE_NAMES) >= {"ollama", "model", "proxy", "service"}
    for role in ROLE_NAMES:
        assert (ROLES / role / "defaults" / "main.yml").exists(), role
        assert (ROLES / role / "README.md").exists(), role


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_defaults_are_specified_with_the_same_value(role: str) -> None:
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}
    options = _spec_options(role)
    missing = sorted(set(defaults) - set(options))
    assert not missing, f"{role}: defaults without an argument spec: {missing}"
    differing = {
        name: (value, options[name].get("default"))
        for name, value in defaults.items()
        if options[name].get("default") != value
    }
    assert not differing, f"{role}: default differs from the spec: {differing}"


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_specified_defaults_exist_in_defaults(role: str) -> None:
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}
    stray = sorted(
        name
        for name, opt in _spec_options(role).items()
        if "default" in opt and not opt.get("required") and name not in defaults
    )
    assert not stray, f"{role}: spec defaults missing from defaults/main.yml: {stray}"


def _spec_entry_points(role: str) -> set[str]:
    spec = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    return set(spec["argument_specs"])


def _tasks_from_calls() -> list[tuple[str, str, str]]:
    """(file, role, entry point) of every include_role/import_role of our roles."""
    calls = []
    for path in sorted(REPO.glob("**/*.yml")):
        if any(part.startswith(".") for part in path.relative_to(REPO).parts):
            continue
        docs = list(yaml.safe_load_all(path.read_text()))
        stack: list[object] = docs
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                for key in ("ansible.builtin.include_role", "ansible.builtin.import_role",
                            "include_role", "import_role"):  # fmt: skip
                    call = node.get(key)
                    if isinstance(call, dict) and str(call.get("name", "")).startswith(
                        "vastllm.stack."
                    ):
                        role = call["name"].removeprefix("vastllm.stack.")
                        entry = str(call.get("tasks_from", "main")).removesuffix(".yml")
                        calls.append((str(path.relative_to(REPO)), role, entry))
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return calls


def test_every_entry_point_that_is_called_has_an_argument_spec() -> None:
    calls = _tasks_from_calls()
    assert ("roles/proxy/tasks/redis.yml", "service", "wait_command") in calls
    unspecified = [c for c in calls if c[2] not in _spec_entry_points(c[1])]
    assert not unspecified, f"entry points called without an argument spec: {unspecified}"


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_every_specified_entry_point_has_its_tasks_file(role: str) -> None:
    missing = sorted(
        e for e in _spec_entry_points(role) if not (ROLES / role / "tasks" / f"{e}.yml").is_file()
    )
    assert not missing, f"{role}: argument specs for missing task files: {missing}"


def test_roles_reach_each_other_only_through_entry_points() -> None:
    """No path includes into another role (`{{ role_path }}/../service/`), no handler callbacks."""
    offenders = []
    for path in sorted(ROLES.glob("*/**/*.yml")):
        text = path.read_text()
        if re.search(r"role_path \}\}/\.\./\w", text) or "service_notify" in text:
            offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders
