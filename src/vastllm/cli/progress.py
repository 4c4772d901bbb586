"""Readable progress from ansible-runner events (pure: an event in, lines out) and the redaction
of secrets in event data.

What a person sees instead of raw Ansible output: the play, each step (task) as it starts, what
changed, the model pull's progress lines (the model role's loop labels: size and rate), failures
with their message, and a per-host recap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

REDACTED = "<redacted>"


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` (str, list, dict, nested) with every secret replaced (pure)."""
    words = [s for s in secrets if s and len(s) >= 4]
    if not words:
        return value

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            for word in words:
                item = item.replace(word, REDACTED)
            return item
        if isinstance(item, dict):
            return {walk(k) if isinstance(k, str) else k: walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        if isinstance(item, tuple):
            return tuple(walk(v) for v in item)
        return item

    return walk(value)


def redact_in_place(event: dict[str, Any], secrets: Iterable[str]) -> None:
    """Redact an ansible-runner event before it is written to the runs folder."""
    clean = redact(event, list(secrets))
    if clean is event:  # no secret to cut (redact returned the event itself, not a copy)
        return
    event.clear()
    event.update(clean)


def _message(res: Mapping[str, Any]) -> str:
    for key in ("msg", "stderr", "reason", "module_stderr", "stdout"):
        value = res.get(key)
        if isinstance(value, str) and value.strip():
            return " ".join(value.strip().split())[:400]
    return "failed"


@dataclass
class Recap:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0


@dataclass
class Progress:
    """Feeds on events; returns the lines to show. Keeps the recap and the failures."""

    verbose: bool = False
    task: str = ""
    host_width: int = 12
    recap: dict[str, Recap] = field(default_factory=dict)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # host, task, message
    results: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # action, host
    steps: int = 0

    def _host(self, data: Mapping[str, Any]) -> str:
        return str(data.get("host") or data.get("remote_addr") or "-")

    def feed(self, event: Mapping[str, Any]) -> list[str]:
        kind = str(event.get("event") or "")
        data = event.get("event_data") or {}
        if not isinstance(data, Mapping):
            data = {}
        if kind == "playbook_on_play_start":
            return [f"== {data.get('name') or data.get('play') or 'play'}"]
        if kind == "playbook_on_task_start":
            name = str(data.get("name") or data.get("task") or "")
            role = str(data.get("role") or "")
            if role and role not in name:
                name = f"{role}: {name}"
            self.task = name
            self.steps += 1
            return [f"   step {self.steps}: {name}"] if self.verbose else []
        res = data.get("res") or {}
        if not isinstance(res, Mapping):
            res = {}
        host = self._host(data)
        action = str(data.get("task_action") or "")
        if kind == "runner_on_ok":
            self.results.append((action, host, dict(res)))
            if res.get("changed"):
                return [f"   {host:<{self.host_width}} changed  {self.task}"]
            return []
        if kind == "runner_item_on_ok":
            label = res.get("_ansible_item_label")
            if "progress" in self.task.lower() and isinstance(label, str) and label:
                return [f"   {host:<{self.host_width}} pull     {label}"]
            return []
        if kind == "runner_on_failed":
            if data.get("ignore_errors"):
                return []
            message = _message(res)
            self.failures.append((host, self.task, message))
            return [f"   {host:<{self.host_width}} FAILED   {self.task}: {message}"]
        if kind == "runner_on_unreachable":
            message = _message(res)
            self.failures.append((host, self.task, message))
            return [f"   {host:<{self.host_width}} UNREACHABLE {message}"]
        if kind == "playbook_on_stats":
            lines = []
            hosts: set[str] = set()
            for key in ("ok", "changed", "failures", "dark", "skipped"):
                counts = data.get(key) or {}
                if isinstance(counts, Mapping):
                    hosts.update(str(h) for h in counts)
            for name in sorted(hosts):
                rec = Recap(
                    ok=int((data.get("ok") or {}).get(name, 0)),
                    changed=int((data.get("changed") or {}).get(name, 0)),
                    failed=int((data.get("failures") or {}).get(name, 0)),
                    unreachable=int((data.get("dark") or {}).get(name, 0)),
                    skipped=int((data.get("skipped") or {}).get(name, 0)),
                )
                self.recap[name] = rec
                lines.append(
                    f"   {name:<{self.host_width}} ok={rec.ok} changed={rec.changed} "
                    f"failed={rec.failed} unreachable={rec.unreachable} skipped={rec.skipped}"
                )
            return lines
        return []

    def status_line(self) -> str:
        """The ephemeral line of a terminal: the step running now."""
        return f"   ... step {self.steps}: {self.task}" if self.task else ""

    @property
    def changed(self) -> int:
        return sum(r.changed for r in self.recap.values())
