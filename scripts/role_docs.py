#!/usr/bin/env python3
"""Write the "Role Variables" part of each roles/*/README.md from meta/argument_specs.yml.

    scripts/role_docs.py            # rewrite the generated part of every role README
    scripts/role_docs.py --check    # exit 1 and name every README whose generated part is stale

The generated part sits between the two marker lines below; everything else in a README is
written by hand and kept. A README without markers gets them around its "## Role Variables"
section (or at its end when it has none) on the first write; --check calls it stale until then.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BEGIN = (
    "<!-- BEGIN role_docs (generated from meta/argument_specs.yml by scripts/role_docs.py:"
    " do not edit) -->"
)
END = "<!-- END role_docs -->"

# Ansible's documentation markup -> Markdown.
_MARKUP = [
    (re.compile(r"L\(([^,()]+),\s*([^()]+)\)"), r"[\1](\2)"),
    (re.compile(r"U\(([^()]+)\)"), r"<\1>"),
    (re.compile(r"R\(([^,()]+),\s*[^()]+\)"), r"\1"),
    (re.compile(r"I\(([^()]+)\)"), r"*\1*"),
    (re.compile(r"B\(([^()]+)\)"), r"**\1**"),
    (re.compile(r"[COVEMP]\(([^()]+)\)"), r"`\1`"),
]


def markup(text: str) -> str:
    for pattern, replacement in _MARKUP:
        text = pattern.sub(replacement, text)
    return " ".join(text.split())


def paragraphs(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [markup(str(item)) for item in items if str(item).strip()]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(option: dict[str, Any]) -> str:
    if option.get("required"):
        return "required"
    if "default" not in option:
        return ""
    value = option["default"]
    if isinstance(value, bool):
        shown = "true" if value else "false"
    elif isinstance(value, str):
        shown = value if value else '""'
    elif isinstance(value, (dict, list)):
        shown = json.dumps(value, separators=(", ", ": "))
    else:
        shown = str(value)
    return f"`{shown}`"


def _type(option: dict[str, Any]) -> str:
    kind = str(option.get("type", "str"))
    if kind == "list" and option.get("elements"):
        kind = f"list of {option['elements']}"
    return kind


def _description(option: dict[str, Any]) -> str:
    text = " ".join(paragraphs(option.get("description")))
    if option.get("choices"):
        text += " Choices: " + ", ".join(f"`{c}`" for c in option["choices"]) + "."
    if option.get("no_log"):
        text += " Never logged."
    return text.strip()


def render(role_dir: Path) -> str:
    """The generated part of the README of the role in role_dir, markers included."""
    specs = yaml.safe_load((role_dir / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    lines = [
        BEGIN,
        "## Role Variables",
        "",
        "Entry points and their options, from `meta/argument_specs.yml` (Ansible validates every"
        " call against it). The defaults, with comments on when to change them, are in"
        " `defaults/main.yml`.",
        "",
    ]
    for name, entry in specs.items():
        fqcn = f"vastllm.stack.{role_dir.name}"
        call = (
            f"Called as the role `{fqcn}` (in `roles:`, or `ansible.builtin.include_role` with"
            f" `name: {fqcn}`)."
            if name == "main"
            else f"Called with `ansible.builtin.include_role` and `name: {fqcn}`,"
            f" `tasks_from: {name}`."
        )
        lines += [f"### Entry point `{name}`", "", call, ""]
        for text in paragraphs(entry.get("short_description")) + paragraphs(
            entry.get("description")
        ):
            lines += [text, ""]
        options = entry.get("options") or {}
        if not options:
            lines += ["No options.", ""]
            continue
        lines += ["| Variable | Type | Default | Description |", "| --- | --- | --- | --- |"]
        for option_name, option in options.items():
            cells = [f"`{option_name}`", _type(option), _default(option), _description(option)]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    while lines[-1] == "":
        lines.pop()
    lines.append(END)
    return "\n".join(lines) + "\n"


def updated(readme: str, block: str) -> str:
    """readme with its generated part replaced by block."""
    if BEGIN in readme and END in readme:
        head, rest = readme.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        return head + block.rstrip("\n") + tail
    match = re.search(r"^## Role Variables\s*$", readme, re.M)
    if match:
        after = re.search(r"^## ", readme[match.end() :], re.M)
        end = match.end() + after.start() if after else len(readme)
        return readme[: match.start()] + block + ("\n" if after else "") + readme[end:]
    return readme.rstrip("\n") + "\n\n" + block


def roles(roles_dir: Path) -> list[Path]:
    return sorted(p for p in roles_dir.iterdir() if (p / "meta" / "argument_specs.yml").is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 when a README is stale"
    )
    parser.add_argument(
        "--roles-dir", type=Path, default=REPO / "roles", help="default: the repository's roles/"
    )
    args = parser.parse_args(argv)

    stale = []
    for role_dir in roles(args.roles_dir):
        readme = role_dir / "README.md"
        current = readme.read_text() if readme.exists() else f"# Role `{role_dir.name}`\n"
        wanted = updated(current, render(role_dir))
        if wanted == current:
            continue
        stale.append(readme)
        if not args.check:
            readme.write_text(wanted)
            print(f"wrote {readme}")
    if args.check and stale:
        for readme in stale:
            print(
                f"stale: {readme} (its argument_specs changed; run scripts/role_docs.py)",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
