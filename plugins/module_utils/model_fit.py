# -*- coding: utf-8 -*-
# Copyright: vastllm contributors
# Apache-2.0
"""Pure logic for choosing an Ollama model among ordered candidates.

No I/O lives here: parsing the ``candidates`` option (names normalised by the one
rule in ``_model_names``), deciding whether a candidate fits the free disk and the memory
limit (with a human-readable reason), and folding a ``/api/pull`` NDJSON stream
into progress figures. Everything is plain functions/classes over literal values
so it can be unit-tested without Ollama or Ansible.

Units (documented for users in docs/model.md):
  * ``size_gb`` / ``memory_gb`` are decimal gigabytes (10**9 bytes), like Ollama shows them;
  * ``memory_limit_mb`` is MiB (2**20 bytes), like nvidia-smi and Ansible's memtotal_mb.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible_collections.vastllm.stack.plugins.module_utils._model_names import (
    ModelNameError,
    display_name,
    name_key,
)

GB = 1000**3
MIB = 1024**2

# Memory a model needs when the candidate does not declare ``memory_gb``:
# weights plus KV cache / runtime overhead, estimated from the download size.
MEMORY_OVERHEAD_FACTOR = 1.2

CANDIDATE_KEYS = ("name", "size_gb", "size_bytes", "memory_gb")


class CandidateError(ValueError):
    """A ``candidates`` entry is malformed; the message names the entry."""


class Candidate:
    """One model the user accepts, in preference order."""

    __slots__ = ("memory_bytes", "name", "size_bytes")

    def __init__(
        self, name: str, size_bytes: Optional[int] = None, memory_bytes: Optional[int] = None
    ) -> None:
        self.name = name
        self.size_bytes = size_bytes
        self.memory_bytes = memory_bytes

    @property
    def key(self) -> str:
        return model_key(self.name)

    def required_memory_bytes(self) -> Optional[int]:
        """Declared memory, else an estimate from the size, else None (unknown)."""
        if self.memory_bytes is not None:
            return self.memory_bytes
        if self.size_bytes is not None:
            return int(self.size_bytes * MEMORY_OVERHEAD_FACTOR)
        return None

    def as_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "size_bytes": self.size_bytes,
            "memory_bytes": self.memory_bytes,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Candidate):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return "Candidate(%r, size_bytes=%r, memory_bytes=%r)" % (
            self.name,
            self.size_bytes,
            self.memory_bytes,
        )


def normalize_name(name: str) -> str:
    """The name the way ``/api/tags`` lists it (the rule lives in ``_model_names``)."""
    try:
        return display_name(name)
    except ModelNameError as exc:
        raise CandidateError(str(exc)) from None


def model_key(name: str) -> str:
    """Comparison key: Ollama matches model names case-insensitively (see ``_model_names``)."""
    try:
        return name_key(name)
    except ModelNameError as exc:
        raise CandidateError(str(exc)) from None


def _number(entry_label: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise CandidateError("%s: %s must be a number, got %r" % (entry_label, key, value))
    try:
        number = float(value)
    except ValueError:
        raise CandidateError(
            "%s: %s must be a number, got %r" % (entry_label, key, value)
        ) from None
    if math.isnan(number) or math.isinf(number) or number <= 0:
        raise CandidateError("%s: %s must be a positive number, got %r" % (entry_label, key, value))
    return number


def parse_candidate(entry: Any, index: int) -> Candidate:
    """Parse one ``candidates`` entry: a name string or a mapping.

    Mapping keys: ``name`` (required), ``size_gb`` or ``size_bytes`` (download size,
    for the disk check), ``memory_gb`` (memory the loaded model needs).
    """
    label = "candidates[%d]" % index
    if isinstance(entry, str):
        try:
            return Candidate(normalize_name(entry))
        except CandidateError as exc:
            raise CandidateError("%s: %s" % (label, exc)) from None
    if not isinstance(entry, Mapping):
        raise CandidateError(
            "%s: expected a model name or a mapping with 'name', got %s %r"
            % (label, type(entry).__name__, entry)
        )
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CandidateError("%s: 'name' is required and must be a non-empty string" % label)
    label = "%s (%s)" % (label, name)
    unknown = sorted(str(k) for k in entry if k not in CANDIDATE_KEYS)
    if unknown:
        raise CandidateError(
            "%s: unknown key(s) %s (allowed: %s)"
            % (label, ", ".join(unknown), ", ".join(CANDIDATE_KEYS))
        )
    try:
        normalized = normalize_name(name)
    except CandidateError as exc:
        raise CandidateError("%s: %s" % (label, exc)) from None
    if entry.get("size_gb") is not None and entry.get("size_bytes") is not None:
        raise CandidateError("%s: give size_gb or size_bytes, not both" % label)
    size_bytes: Optional[int] = None
    if entry.get("size_gb") is not None:
        size_bytes = int(_number(label, "size_gb", entry["size_gb"]) * GB)
    elif entry.get("size_bytes") is not None:
        size_bytes = int(_number(label, "size_bytes", entry["size_bytes"]))
    memory_bytes: Optional[int] = None
    if entry.get("memory_gb") is not None:
        memory_bytes = int(_number(label, "memory_gb", entry["memory_gb"]) * GB)
    return Candidate(normalized, size_bytes, memory_bytes)


def parse_candidates(entries: Optional[Sequence[Any]]) -> List[Candidate]:
    """Parse the whole list; empty lists and duplicate names are errors."""
    if not entries:
        raise CandidateError("candidates is empty: list at least one model")
    result: List[Candidate] = []
    seen: Dict[str, int] = {}
    for index, entry in enumerate(entries):
        candidate = parse_candidate(entry, index)
        if candidate.key in seen:
            raise CandidateError(
                "candidates[%d]: %s is listed twice (also candidates[%d])"
                % (index, candidate.name, seen[candidate.key])
            )
        seen[candidate.key] = index
        result.append(candidate)
    return result


def human_bytes(count: Optional[float]) -> str:
    """Decimal units like Ollama: 19000000000 -> '19.0 GB'."""
    if count is None:
        return "unknown"
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000:
            return "%d %s" % (value, unit) if unit == "B" else "%.1f %s" % (value, unit)
        value /= 1000.0
    return "%.1f TB" % value


def check_fit(
    candidate: Candidate,
    present: bool,
    free_disk_bytes: Optional[int],
    disk_margin_bytes: int,
    memory_limit_bytes: Optional[int],
) -> Optional[str]:
    """Return why the candidate cannot be used, or None when it fits.

    * memory: the model must fit ``memory_limit_bytes`` (skipped when no limit is
      given or the need is unknown) -- this applies to present models too, since
      a model that cannot be loaded is useless;
    * disk: a model not present yet needs ``size + margin`` free bytes (skipped
      when the size or the free space is unknown).
    """
    need_mem = candidate.required_memory_bytes()
    if memory_limit_bytes is not None and need_mem is not None and need_mem > memory_limit_bytes:
        how = (
            ""
            if candidate.memory_bytes is not None
            else " (estimated as %.1f x size)" % (MEMORY_OVERHEAD_FACTOR)
        )
        return "needs %s of memory%s but the limit is %s" % (
            human_bytes(need_mem),
            how,
            human_bytes(memory_limit_bytes),
        )
    if present:
        return None
    if free_disk_bytes is not None and candidate.size_bytes is not None:
        need_disk = candidate.size_bytes + disk_margin_bytes
        if need_disk > free_disk_bytes:
            return "needs %s of disk (%s + %s margin) but only %s is free" % (
                human_bytes(need_disk),
                human_bytes(candidate.size_bytes),
                human_bytes(disk_margin_bytes),
                human_bytes(free_disk_bytes),
            )
    return None


def index_models(tags: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Map model key -> ``/api/tags`` entry (``name``, ``digest``, ``size``...)."""
    models = tags.get("models") or []
    result: Dict[str, Dict[str, Any]] = {}
    for item in models:
        if not isinstance(item, Mapping):
            continue
        name = item.get("name") or item.get("model")
        if not isinstance(name, str) or not name:
            continue
        try:
            result[model_key(name)] = dict(item)
        except CandidateError:
            continue
    return result


def present_names(index: Mapping[str, Mapping[str, Any]]) -> List[str]:
    """Sorted display names of the present models (for diff output)."""
    return sorted(str(v.get("name") or v.get("model")) for v in index.values())


def format_progress(model: str, completed: int, total: int, verb: str = "pulling") -> str:
    """'pulling qwen3-coder:30b: 12.3 of 19.0 GB (65%)'."""
    if total > 0:
        return "%s %s: %.1f of %.1f GB (%d%%)" % (
            verb,
            model,
            completed / GB,
            total / GB,
            int(percent(completed, total)),
        )
    return "%s %s: %.1f GB so far" % (verb, model, completed / GB)


def percent(completed: int, total: int) -> float:
    if total <= 0:
        return 0.0
    return round(min(100.0, 100.0 * completed / total), 1)


class PullProgress:
    """Folds ``/api/pull`` NDJSON lines into totals and a final verdict.

    Ollama reports one ``{status, digest, total, completed}`` stream per layer;
    the overall figures are the sums over layers. Only a final ``success``
    status means the pull worked; an ``error`` line (even under HTTP 200) fails it.
    """

    def __init__(self, model: str, started_at: float) -> None:
        self.model = model
        self.started_at = started_at
        self.status = "starting"
        self.error: Optional[str] = None
        self.succeeded = False
        self.lines = 0
        self._totals: Dict[str, int] = {}
        self._completed: Dict[str, int] = {}
        self._last_at = started_at

    @property
    def total(self) -> int:
        return sum(self._totals.values())

    @property
    def completed(self) -> int:
        return sum(self._completed.values())

    def feed(self, line: Mapping[str, Any], now: float) -> None:
        self.lines += 1
        self._last_at = now
        if line.get("error"):
            self.error = str(line["error"])
            self.status = "error"
            return
        status = line.get("status")
        if isinstance(status, str):
            self.status = status
            # a later line could, in theory, follow "success"; only the last counts
            self.succeeded = status == "success"
        digest = line.get("digest")
        if isinstance(digest, str) and digest:
            total = line.get("total")
            if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
                self._totals[digest] = total
            done = line.get("completed")
            if isinstance(done, int) and not isinstance(done, bool) and done >= 0:
                self._completed[digest] = max(done, self._completed.get(digest, 0))

    def rate(self, now: float) -> float:
        """Average bytes per second since the pull started."""
        elapsed = now - self.started_at
        if elapsed <= 0:
            return 0.0
        return self.completed / elapsed

    def failure(self) -> Optional[str]:
        """None when the stream ended in success, else the reason."""
        if self.error is not None:
            return "pull failed: %s" % self.error
        if not self.succeeded:
            if self.lines == 0:
                return "pull failed: Ollama sent an empty response"
            return "pull failed: stream ended without success (last status: %s)" % self.status
        return None

    def record(self, now: float, state: str) -> Dict[str, Any]:
        """The progress-file document."""
        completed = self.completed
        total = self.total
        return {
            "model": self.model,
            "state": state,
            "status": self.status,
            "completed": completed,
            "total": total,
            "percent": percent(completed, total),
            "rate_bytes_per_s": round(self.rate(now), 1),
            "message": format_progress(
                self.model, completed, total, "pulled" if state == "done" else "pulling"
            ),
            "error": self.error,
            "started_at": self.started_at,
            "updated_at": now,
        }
