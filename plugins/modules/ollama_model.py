#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vastllm contributors
# Apache-2.0
"""Ansible module: make sure an Ollama model (the first candidate that fits) is present."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ollama_model
short_description: Ensure an Ollama model is present (with ordered fallbacks) or absent
description:
  - Pulls a model into a running Ollama server through its REST API, or removes it.
  - With O(candidates), tries an ordered list of models and keeps the first one that
    fits the host. A candidate is skipped, and the reason recorded, when it does not
    fit the free disk (download size + O(disk_margin_gb); a model already present needs
    no disk), when it does not fit O(memory_limit_mb), when the registry does not know it,
    when the pull stream reports an error (an HTTP 200 stream is only a success when its
    last line says C(success)), or when the network keeps failing after O(retries).
  - Candidates are tried strictly in order. The first candidate that fits is used; if it is
    already present nothing is pulled (C(changed=false)); if it is not present it is pulled,
    even when a later candidate is already present, because a higher preference wins.
  - The module fails only when no candidate can be used, and then lists every attempt with its
    reason. An Ollama server that cannot be reached at all fails at once, naming the URL.
  - While pulling, the module rewrites O(progress_file) atomically (model, status,
    completed/total bytes, percent, rate), so a play that runs the module with C(async)
    can show progress.
  - Runs on the host that can reach Ollama; needs only the Python standard library.
version_added: "0.1.0"
author:
  - vastllm contributors (@vastllm)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  ollama_url:
    description: Base URL of the Ollama REST API.
    type: str
    default: http://127.0.0.1:11434
  state:
    description:
      - V(present) makes sure a model (O(name), or the first fitting O(candidates) entry)
        is present.
      - V(absent) removes O(name), or every model listed in O(candidates), when present.
    type: str
    choices: [present, absent]
    default: present
  name:
    description:
      - A single model, for example C(qwen2.5-coder:7b). A name without a tag means C(:latest).
      - Mutually exclusive with O(candidates); one of the two is required.
    type: str
  candidates:
    description:
      - Ordered list of acceptable models, most preferred first.
      - Each entry is either a model name string, or a mapping with the keys C(name) (required),
        C(size_gb) or C(size_bytes) (download size, used for the disk check; decimal GB)
        and C(memory_gb) (memory the loaded model needs, decimal GB, compared with
        O(memory_limit_mb)). Without C(memory_gb), the need is estimated as 1.2 x the size;
        without any size, the disk and memory checks are skipped for that entry.
      - Unknown keys, empty names and duplicate names are errors.
    type: list
    elements: raw
  models_path:
    description:
      - Directory where Ollama stores models (its E(OLLAMA_MODELS)); its file system's free
        space is used for the disk check. If it does not exist yet, the nearest existing parent
        is used.
      - Defaults to E(OLLAMA_MODELS) from the module's environment, else C(/root/.ollama/models).
    type: path
  disk_margin_gb:
    description: Free disk (decimal GB) that must remain after a download.
    type: float
    default: 2.0
  memory_limit_mb:
    description:
      - Memory (MiB) a model must fit, for example the total GPU VRAM, or the RAM in CPU mode.
      - Omit to skip the memory check.
    type: int
  update:
    description:
      - Pull the selected model again even when it is present, to pick up a newer version.
        C(changed) is then true only when its digest changed.
    type: bool
    default: false
  pull_timeout:
    description:
      - Longest time (seconds) one pull may take; a slower pull is abandoned and the next
        candidate is tried. The default suits a 19 GB model on a slow link.
      - Every single read of the progress stream also times out after min(300, O(pull_timeout))
        seconds of silence.
    type: int
    default: 7200
  retries:
    description: How many times a request (or a pull whose connection broke) is retried on
      network errors and HTTP 5xx answers, with exponential backoff.
    type: int
    default: 3
  retry_delay:
    description: First backoff delay in seconds; it doubles on every retry (capped at 30 s).
    type: float
    default: 2.0
  progress_file:
    description:
      - JSON file rewritten atomically while pulling, with the keys C(model), C(state),
        C(status), C(completed), C(total), C(percent), C(rate_bytes_per_s), C(message),
        C(error), C(started_at), C(updated_at) (epoch seconds), C(run_id) and C(finished).
      - The first document of a run has C(state=checking); the last one has C(finished=true) and
        C(state) V(done) or V(failed) (with the outcome in C(message)), so a poller knows when
        to stop. Nothing is written in check mode.
      - Set to an empty string to disable.
    type: path
    default: /var/lib/vastllm/ollama-pull-progress.json
  run_id:
    description: Opaque value copied into O(progress_file), so a poller can tell this run's
      progress from a previous run's.
    type: str
    default: ""
  insecure:
    description: Allow pulling from a registry over plain HTTP / without TLS verification
      (Ollama's C(insecure) flag), and skip TLS verification of O(ollama_url).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Computes which candidate would be selected and whether it would be pulled or removed,
      using the present models and the fit checks. Whether the registry really has a model
      cannot be known without pulling, so this is reported in RV(msg).
  diff_mode:
    support: full
    details: Shows the list of present models before and after.
  platform:
    support: full
    platforms: posix
notes:
  - Sizes and memory in candidates are decimal GB (10^9 bytes), as Ollama shows them;
    O(memory_limit_mb) is MiB, as C(nvidia-smi) and C(ansible_facts.memtotal_mb) report it.
seealso:
  - name: Ollama API
    description: The REST API this module talks to.
    link: https://github.com/ollama/ollama/blob/main/docs/api.md
"""

EXAMPLES = r"""
- name: Pull one model
  vastllm.stack.ollama_model:
    name: qwen2.5-coder:7b

- name: Best coding model that fits this GPU and disk
  vastllm.stack.ollama_model:
    candidates:
      - name: qwen3-coder:30b
        size_gb: 19
        memory_gb: 24
      - name: qwen2.5-coder:7b
        size_gb: 4.7
        memory_gb: 8
      - qwen2.5-coder:1.5b
    memory_limit_mb: "{{ vastllm_gpu.vram_total_mb }}"
    models_path: /usr/share/ollama/.ollama/models
  register: picked

- name: Long pull in the background, progress readable from the progress file
  vastllm.stack.ollama_model:
    name: qwen3-coder:30b
    progress_file: /var/lib/vastllm/ollama-pull-progress.json
  async: 7200
  poll: 0
  register: pull_job

- name: Remove a model
  vastllm.stack.ollama_model:
    name: llama3.1:8b
    state: absent
"""

RETURN = r"""
model:
  description: The selected (present or pulled) model; null for O(state=absent).
  type: str
  returned: success
  sample: qwen2.5-coder:7b
digest:
  description: Digest of the selected model as listed by C(/api/tags); null in check mode when it
    would be pulled, and for O(state=absent).
  type: str
  returned: success
  sample: 2b0496514337a3d5901f1d253d01726c890b721e891335a56d6e08eedc5ba6ca
size:
  description: Size in bytes of the selected model (as listed by C(/api/tags), else the declared
    size); null when unknown.
  type: int
  returned: success
  sample: 4683087332
pulled:
  description: Whether a model was pulled during this run.
  type: bool
  returned: always
  sample: true
attempts:
  description:
    - One entry per candidate looked at, in order.
    - "C(result) is one of V(present) (already there, used), V(pulled), V(skipped) (does not fit
      disk/memory, not tried), V(failed) (tried and failed: unknown model, pull error, network
      failure), V(removed), V(absent) (nothing to remove), and in check mode V(would_pull) /
      V(would_remove)."
  type: list
  elements: dict
  returned: always
  sample:
    - name: qwen3-coder:30b
      result: skipped
      reason: needs 24.0 GB of memory but the limit is 8.6 GB
    - name: qwen2.5-coder:7b
      result: pulled
      reason: pulled 4.7 GB in 95.2 s
  contains:
    name:
      description: Normalised model name.
      type: str
    result:
      description: What happened to this candidate.
      type: str
    reason:
      description: Why, in words.
      type: str
changed:
  description: True when a model was added or removed, or its digest changed.
  type: bool
  returned: always
  sample: true
msg:
  description: Summary, including the check mode caveat about registry availability.
  type: str
  returned: always
  sample: "check mode: qwen2.5-coder:7b would be pulled; registry availability is not verified"
diff:
  description: Present models before and after (only with C(--diff)).
  type: dict
  returned: when diff mode is on
  sample:
    before: "qwen2.5-coder:1.5b\n"
    after: "qwen2.5-coder:1.5b\nqwen2.5-coder:7b\n"
"""

import json
import os
import tempfile
import time
from typing import Any, Dict, List, Optional

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vastllm.stack.plugins.module_utils._retry import (
    RetryPolicy,
    call_with_retries,
)
from ansible_collections.vastllm.stack.plugins.module_utils.model_fit import (
    GB,
    MIB,
    Candidate,
    CandidateError,
    PullProgress,
    check_fit,
    human_bytes,
    index_models,
    normalize_name,
    parse_candidates,
    present_names,
)
from ansible_collections.vastllm.stack.plugins.module_utils.ollama_api import (
    MAX_BACKOFF,
    OllamaClient,
    OllamaError,
    OllamaUnreachable,
)

DEFAULT_MODELS_PATH = "/root/.ollama/models"
PROGRESS_INTERVAL = 0.5  # seconds between progress-file rewrites
MAX_READ_TIMEOUT = 300.0


class _PullBroke(Exception):
    """A pull that broke for a reason worth another try (network, 5xx, stream cut short)."""

    def __init__(self, reason: str, retry_after: Optional[float] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def free_disk_bytes(path: str) -> Optional[int]:
    """Free bytes (for unprivileged users) on the file system holding ``path``."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent
    try:
        stat = os.statvfs(probe)
    except OSError:
        return None
    return int(stat.f_bavail * stat.f_frsize)


class ProgressFile:
    """Atomic, throttled writer of the pull progress document.

    Every document carries ``run_id`` and ``finished``; the last one written by a run has
    ``finished: true`` (state ``done`` or ``failed``), so a poller knows when to stop.
    """

    def __init__(self, path: str, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        self.warning: Optional[str] = None
        self._last_write = 0.0
        self._last: Dict[str, Any] = {}

    def start(self) -> None:
        now = time.time()
        self.write(
            {
                "model": None,
                "state": "checking",
                "status": "",
                "completed": 0,
                "total": 0,
                "percent": 0.0,
                "rate_bytes_per_s": 0.0,
                "message": "checking candidates",
                "error": None,
                "started_at": now,
                "updated_at": now,
            },
            force=True,
        )

    def finish(self, state: str, message: str) -> None:
        record = dict(self._last, state=state, message=message, updated_at=time.time())
        self.write(record, force=True, finished=True)

    def write(self, record: Dict[str, Any], force: bool = False, finished: bool = False) -> None:
        self._last = record
        if not self.path or self.warning:
            return
        now = time.time()
        if not force and now - self._last_write < PROGRESS_INTERVAL:
            return
        self._last_write = now
        document = dict(record)
        document["run_id"] = self.run_id  # these two last, in this order (pollers grep them)
        document["finished"] = finished
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o755)
            fd, tmp = tempfile.mkstemp(prefix=".progress-", dir=directory)
            try:
                with os.fdopen(fd, "w") as handle:
                    json.dump(document, handle)
                os.chmod(tmp, 0o644)
                os.replace(tmp, self.path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            self.warning = "cannot write progress file %s: %s" % (self.path, exc)


def fail(module: AnsibleModule, progress: ProgressFile, msg: str, **kwargs: Any) -> None:
    """fail_json, after marking the progress document as finished."""
    progress.finish("failed", "failed: %s" % msg)
    module.fail_json(msg=msg, **kwargs)


class Runner:
    def __init__(self, module: AnsibleModule, progress: ProgressFile) -> None:
        self.module = module
        self.progress = progress
        p = module.params
        self.url: str = p["ollama_url"]
        self.check_mode: bool = module.check_mode
        try:
            self.client = OllamaClient(
                self.url,
                timeout=30.0,
                retries=p["retries"],
                retry_delay=p["retry_delay"],
                insecure=p["insecure"],
            )
        except ValueError as exc:
            self.fail(str(exc))
        self.models_path: str = (
            p["models_path"] or os.environ.get("OLLAMA_MODELS") or DEFAULT_MODELS_PATH
        )
        self.margin_bytes = int(p["disk_margin_gb"] * GB)
        limit = p["memory_limit_mb"]
        self.memory_limit_bytes: Optional[int] = None if limit is None else int(limit) * MIB
        self.attempts: List[Dict[str, Any]] = []

    def fail(self, msg: str, **kwargs: Any) -> None:
        fail(self.module, self.progress, msg, **kwargs)

    # -- Ollama calls -------------------------------------------------------------------------

    def tags(self) -> Dict[str, Dict[str, Any]]:
        try:
            data = self.client.get_json("/api/tags")
        except OllamaUnreachable as exc:
            self.fail(str(exc), url=self.url, attempts=self.attempts)
        except OllamaError as exc:
            self.fail("listing models failed: %s" % exc, url=self.url, attempts=self.attempts)
        if not isinstance(data, dict):
            self.fail("Ollama at %s answered /api/tags with %r, not a list" % (self.url, data))
        return index_models(data)

    def pull(self, candidate: Candidate) -> Optional[str]:
        """Pull; return None on success or the failure reason."""
        p = self.module.params
        deadline = time.time() + p["pull_timeout"]
        read_timeout = float(min(MAX_READ_TIMEOUT, p["pull_timeout"]))
        body = {
            "model": candidate.name,
            "name": candidate.name,
            "stream": True,
            "insecure": p["insecure"],
        }
        tries: List[int] = []

        def attempt() -> Optional[str]:
            """One pull; None on success, else the final reason; _PullBroke to try again."""
            tries.append(len(tries))
            tracker = PullProgress(candidate.name, time.time())
            self.progress.write(tracker.record(time.time(), "pulling"), force=True)
            try:
                for line in self.client.stream_ndjson("/api/pull", body, read_timeout, retries=0):
                    now = time.time()
                    tracker.feed(line, now)
                    self.progress.write(tracker.record(now, "pulling"))
                    if tracker.error is not None:
                        break
                    if now > deadline:
                        self.progress.write(tracker.record(now, "failed"), force=True)
                        return "pull timed out after %d s (%s of %s)" % (
                            p["pull_timeout"],
                            human_bytes(tracker.completed),
                            human_bytes(tracker.total or None),
                        )
            except OllamaUnreachable as exc:
                self.progress.write(tracker.record(time.time(), "retrying"), force=True)
                raise _PullBroke(exc.reason) from None
            except OllamaError as exc:
                if exc.status is not None and exc.status >= 500:
                    # busy / transient server error: worth another try, like a network error
                    self.progress.write(tracker.record(time.time(), "retrying"), force=True)
                    raise _PullBroke(str(exc), exc.retry_after) from None
                self.progress.write(tracker.record(time.time(), "failed"), force=True)
                if exc.status == 404:
                    return "not found in the registry: %s" % exc.message
                return "pull failed: %s" % exc
            if tracker.error is None and not tracker.succeeded:
                # the stream stopped without "success" or an error line: the connection
                # was cut (Ollama resumes partial downloads, so starting over is cheap)
                self.progress.write(tracker.record(time.time(), "retrying"), force=True)
                raise _PullBroke("the pull stream ended early (last status: %s)" % tracker.status)
            failure = tracker.failure()
            state = "failed" if failure else "done"
            self.progress.write(tracker.record(time.time(), state), force=True)
            return failure

        # The same backoff as every request (doubling from retry_delay, capped at 30 s); no
        # new try starts once pull_timeout has passed.
        policy = RetryPolicy(
            retries=p["retries"],
            base=p["retry_delay"],
            cap=MAX_BACKOFF,
            max_retry_after=MAX_READ_TIMEOUT,
            deadline=float(p["pull_timeout"]),
        )
        try:
            return call_with_retries(
                attempt,
                policy,
                lambda error: isinstance(error, _PullBroke),
                lambda error: error.retry_after if isinstance(error, _PullBroke) else None,
                sleep=time.sleep,
                clock=time.time,
            )
        except _PullBroke as exc:
            return "network/server failure after %d attempt(s) at %s: %s" % (
                len(tries),
                self.url,
                exc.reason,
            )

    def delete(self, name: str) -> Optional[str]:
        """Delete; None on success (or already gone), else the reason."""
        try:
            self.client.delete_json("/api/delete", {"model": name, "name": name})
        except OllamaError as exc:
            if exc.status == 404:
                return None
            return str(exc)
        except OllamaUnreachable as exc:
            return str(exc)
        return None

    # -- states --------------------------------------------------------------------------------

    def candidates(self) -> List[Candidate]:
        p = self.module.params
        try:
            if p["name"] is not None:
                return [Candidate(normalize_name(p["name"]))]
            return parse_candidates(p["candidates"])
        except CandidateError as exc:
            self.fail("invalid model list: %s" % exc)
        raise AssertionError("unreachable")

    def record(self, candidate: Candidate, result: str, reason: str) -> None:
        self.attempts.append({"name": candidate.name, "result": result, "reason": reason})

    def diff(self, before: List[str], after: List[str]) -> Dict[str, Any]:
        return {
            "before_header": "ollama models at %s" % self.url,
            "after_header": "ollama models at %s" % self.url,
            "before": "".join(n + "\n" for n in before),
            "after": "".join(n + "\n" for n in after),
        }

    def present(self) -> Dict[str, Any]:
        candidates = self.candidates()
        index = self.tags()
        before = present_names(index)
        update = self.module.params["update"]
        for candidate in candidates:
            entry = index.get(candidate.key)
            is_present = entry is not None
            reason = check_fit(
                candidate,
                is_present,
                None if is_present else free_disk_bytes(self.models_path),
                self.margin_bytes,
                self.memory_limit_bytes,
            )
            if reason is not None:
                self.record(candidate, "skipped", reason)
                continue
            if entry is not None and not (update and not self.check_mode):
                note = "already present"
                if update:
                    note += " (check mode: newer versions are not looked up)"
                self.record(candidate, "present", note)
                return self.result(candidate, entry, before, before, pulled=False, changed=False)
            if self.check_mode:
                self.record(
                    candidate, "would_pull", "not present; would be pulled (registry not checked)"
                )
                after = sorted([*before, candidate.name])
                return self.result(
                    candidate,
                    None,
                    before,
                    after,
                    pulled=False,
                    changed=True,
                    msg="check mode: %s would be pulled; registry availability is not verified"
                    % candidate.name,
                )
            started = time.time()
            failure = self.pull(candidate)
            if failure is not None:
                self.record(candidate, "failed", failure)
                continue
            new_index = self.tags()
            new_entry = new_index.get(candidate.key)
            if new_entry is None:
                self.record(
                    candidate,
                    "failed",
                    "pull reported success but the model is missing from /api/tags",
                )
                index = new_index
                continue
            after = present_names(new_index)
            old_digest = entry.get("digest") if entry is not None else None
            changed = entry is None or old_digest != new_entry.get("digest")
            took = time.time() - started
            if changed:
                self.record(
                    candidate,
                    "pulled",
                    "pulled %s in %.1f s" % (human_bytes(new_entry.get("size")), took),
                )
            else:
                self.record(candidate, "present", "already present and up to date")
            return self.result(candidate, new_entry, before, after, pulled=changed, changed=changed)
        self.fail_all()
        raise AssertionError("unreachable")

    def fail_all(self) -> None:
        lines = ["%s: %s (%s)" % (a["name"], a["result"], a["reason"]) for a in self.attempts]
        self.fail(
            "no candidate model could be used: " + "; ".join(lines),
            attempts=self.attempts,
            url=self.url,
            models_path=self.models_path,
        )

    def result(
        self,
        candidate: Candidate,
        entry: Optional[Dict[str, Any]],
        before: List[str],
        after: List[str],
        pulled: bool,
        changed: bool,
        msg: str = "",
    ) -> Dict[str, Any]:
        size = entry.get("size") if entry is not None else candidate.size_bytes
        name = str(entry.get("name")) if entry is not None else candidate.name
        if not msg:
            msg = "%s %s" % (name, "pulled" if pulled else "already present")
        result: Dict[str, Any] = {
            "changed": changed,
            "model": name,
            "digest": entry.get("digest") if entry is not None else None,
            "size": size,
            "pulled": pulled,
            "attempts": self.attempts,
            "msg": msg,
        }
        if self.module._diff:
            result["diff"] = self.diff(before, after)
        return result

    def absent(self) -> Dict[str, Any]:
        candidates = self.candidates()
        index = self.tags()
        before = present_names(index)
        changed = False
        errors: List[str] = []
        for candidate in candidates:
            if candidate.key not in index:
                self.record(candidate, "absent", "not present")
                continue
            if self.check_mode:
                self.record(candidate, "would_remove", "present; would be removed")
                changed = True
                continue
            failure = self.delete(candidate.name)
            if failure is not None:
                self.record(candidate, "failed", failure)
                errors.append("%s: %s" % (candidate.name, failure))
                continue
            self.record(candidate, "removed", "removed")
            changed = True
        if errors:
            self.fail(
                "removing failed: " + "; ".join(errors), attempts=self.attempts, changed=changed
            )
        removed = {a["name"].lower() for a in self.attempts if a["result"] != "absent"}
        after = [n for n in before if n.lower() not in removed]
        result: Dict[str, Any] = {
            "changed": changed,
            "model": None,
            "digest": None,
            "size": None,
            "pulled": False,
            "attempts": self.attempts,
            "msg": "removed %d model(s)" % sum(1 for a in self.attempts if a["result"] != "absent"),
        }
        if self.check_mode:
            result["msg"] = "check mode: " + result["msg"].replace("removed", "would remove")
        if self.module._diff:
            result["diff"] = self.diff(before, after)
        return result


ARGUMENT_SPEC: Dict[str, Dict[str, Any]] = {
    "ollama_url": {"type": "str", "default": "http://127.0.0.1:11434"},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "name": {"type": "str"},
    "candidates": {"type": "list", "elements": "raw"},
    "models_path": {"type": "path"},
    "disk_margin_gb": {"type": "float", "default": 2.0},
    "memory_limit_mb": {"type": "int"},
    "update": {"type": "bool", "default": False},
    "pull_timeout": {"type": "int", "default": 7200},
    "retries": {"type": "int", "default": 3},
    "retry_delay": {"type": "float", "default": 2.0},
    "progress_file": {
        "type": "path",
        "default": "/var/lib/vastllm/ollama-pull-progress.json",
    },
    "run_id": {"type": "str", "default": ""},
    "insecure": {"type": "bool", "default": False},
}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        mutually_exclusive=[("name", "candidates")],
        required_one_of=[("name", "candidates")],
        supports_check_mode=True,
    )
    p = module.params
    # no side effects in check mode: not even the progress file
    path = "" if module.check_mode else p["progress_file"] or ""
    progress = ProgressFile(path, p["run_id"] or "")
    progress.start()
    try:
        problem = check_params(p)
        if problem:
            fail(module, progress, problem)
        runner = Runner(module, progress)
        result = runner.present() if p["state"] == "present" else runner.absent()
    except SystemExit:
        raise
    except Exception as exc:  # no traceback for users: name the cause
        fail(module, progress, "unexpected error: %s: %s" % (type(exc).__name__, exc))
        raise AssertionError("unreachable") from exc
    progress.finish("done", result["msg"])
    if progress.warning:
        module.warn(progress.warning)
    module.exit_json(**result)


def check_params(p: Dict[str, Any]) -> Optional[str]:
    """The first invalid numeric option, in words, or None."""
    if p["pull_timeout"] <= 0:
        return "pull_timeout must be positive, got %s" % p["pull_timeout"]
    for key in ("retries", "retry_delay", "disk_margin_gb"):
        if p[key] < 0:
            return "%s must not be negative, got %s" % (key, p[key])
    if p["memory_limit_mb"] is not None and p["memory_limit_mb"] <= 0:
        return "memory_limit_mb must be positive, got %s" % p["memory_limit_mb"]
    return None


if __name__ == "__main__":
    main()
