"""The record files (rotated JSON lines) and the small state file of the monitor.

``<state_dir>/monitor.jsonl`` takes one JSON object per line. Before an append that would take it
beyond ``max_bytes`` it becomes ``monitor.jsonl.1`` (the older ones shift to ``.2`` …), and the
file beyond ``max_files`` is deleted. ``<state_dir>/state.json`` keeps what must survive a restart
of the monitor (idle timer, restart history); it is replaced atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vastllm.monitor.policy import files_oldest_first, rotation_moves, should_rotate

RECORDS = "monitor.jsonl"
STATE = "state.json"


class RecordLog:
    def __init__(self, state_dir: str, max_bytes: int, max_files: int) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / RECORDS
        self.max_bytes = max_bytes
        self.max_files = max_files

    def ensure_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o750)

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        self.ensure_dir()
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if should_rotate(size, len(line), self.max_bytes):
            self.rotate()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def rotate(self) -> None:
        for src, dst in rotation_moves(str(self.path), self.max_files):
            try:
                if dst is None:
                    os.unlink(src)
                else:
                    os.replace(src, dst)
            except FileNotFoundError:
                continue

    def files(self) -> list[Path]:
        """Existing record files, oldest first."""
        names = files_oldest_first(str(self.path), self.max_files)
        return [Path(name) for name in names if os.path.exists(name)]

    def read(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Records oldest first (only those with ``ts`` > since, when given). Lines that are not
        JSON objects (a line cut by a crash, a file being written) are skipped."""
        for path in self._files_all():
            try:
                handle = path.open("rb")
            except OSError:
                continue
            with handle:
                for raw in handle:
                    try:
                        record = json.loads(raw)
                    except ValueError:
                        continue
                    if not isinstance(record, dict):
                        continue
                    ts = record.get("ts")
                    if since is not None and not (isinstance(ts, int | float) and ts > since):
                        continue
                    yield record

    def _files_all(self) -> list[Path]:
        """Like ``files`` but also older files left from a larger ``max_files`` setting."""
        extra: list[tuple[int, Path]] = []
        if self.dir.is_dir():
            for entry in self.dir.glob(RECORDS + ".*"):
                suffix = entry.name[len(RECORDS) + 1 :]
                if suffix.isdigit() and int(suffix) > self.max_files:
                    extra.append((int(suffix), entry))
        return [path for _n, path in sorted(extra, reverse=True)] + self.files()

    def last(self, kind: str = "round") -> dict[str, Any] | None:
        """The last record of ``kind`` (reads the newest file first)."""
        for path in reversed(self._files_all()):
            try:
                lines = path.read_bytes().splitlines()
            except OSError:
                continue
            for raw in reversed(lines):
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("kind") == kind:
                    return record
        return None


def load_state(state_dir: str) -> dict[str, Any]:
    try:
        data = json.loads((Path(state_dir) / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(state_dir: str, state: dict[str, Any]) -> None:
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o750)
    tmp = directory / f".{STATE}.tmp"
    tmp.write_text(json.dumps(state, separators=(",", ":"), sort_keys=True))
    os.chmod(tmp, 0o600)
    os.replace(tmp, directory / STATE)
