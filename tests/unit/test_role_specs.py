"""Each role's documented interface matches what it really reads: every default is in
meta/argument_specs.yml with the same default, and every spec'd option with a default has it in
defaults/main.yml (as prometheus-community's lint_arguments_spec does)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
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
