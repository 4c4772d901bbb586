"""Run a playbook through ansible-runner, showing ``Progress`` lines instead of Ansible's output.

The run's artifacts (events, stdout, the command line) stay in the runs folder,
``<state>/runs/<time>-<command>/``. Secrets known to the CLI (the vast.ai key, the proxy key) are
cut out of every event before ansible-runner writes it, and of every file left in the folder
afterwards. Environment files are not written (``suppress_env_files``): the vast.ai key reaches
Ansible only through the inherited process environment.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from vastllm.cli.progress import Progress, redact, redact_in_place


@dataclass
class RunResult:
    playbook: str
    rc: int
    status: str
    run_dir: Path
    progress: Progress

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.status == "successful"


def scrub_files(folder: Path, secrets: Iterable[str]) -> int:
    """Replace every secret in every file under ``folder``; returns how many files changed."""
    words = [s for s in secrets if s and len(s) >= 4]
    if not words:
        return 0
    changed = 0
    for path in folder.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError:
            continue
        clean = redact(text, words)
        if clean != text:
            path.write_text(clean, encoding="utf-8", errors="surrogateescape")
            changed += 1
    return changed


def run_playbook(
    playbook: Path,
    *,
    repo: Path,
    run_dir: Path,
    inventory: str,
    extravars: Mapping[str, Any] | None = None,
    extra_args: Sequence[str] = (),
    secrets: Callable[[], Iterable[str]] = tuple,
    verbose: bool = False,
    out: TextIO | None = None,
) -> RunResult:
    """Run ``playbook`` (ansible-runner, from the checkout ``repo``) and return its outcome."""
    import ansible_runner

    stream = sys.stderr if out is None else out
    progress = Progress(verbose=True)
    tty = stream.isatty() and not verbose
    shown_status = [False]

    def emit(line: str) -> None:
        if tty and shown_status[0]:
            stream.write("\r\033[K")
            shown_status[0] = False
        stream.write(line + "\n")
        stream.flush()

    def handler(event: dict[str, Any]) -> bool:
        redact_in_place(event, secrets())
        if verbose:
            text = str(event.get("stdout") or "")
            if text:
                emit(text)
            progress.feed(event)
            return True
        lines = progress.feed(event)
        for line in lines:
            if line.lstrip().startswith("step "):
                if tty:
                    stream.write("\r\033[K" + progress.status_line()[:150])
                    stream.flush()
                    shown_status[0] = True
                continue
            emit(line)
        return True

    env = {
        "ANSIBLE_CONFIG": str(repo / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        # The controller's Python (the CLI's venv) runs ansible-playbook and the local modules.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    result = ansible_runner.run(
        private_data_dir=str(run_dir),
        project_dir=str(repo),
        playbook=str(playbook),
        inventory=inventory,
        extravars=dict(extravars or {}),
        cmdline=shlex.join(list(extra_args)) if extra_args else None,
        envvars=env,
        suppress_env_files=True,
        quiet=True,
        ident=playbook.stem,
        event_handler=handler,
        rotate_artifacts=0,
    )
    if tty and shown_status[0]:
        stream.write("\r\033[K")
        stream.flush()
    scrub_files(run_dir, secrets())
    return RunResult(
        playbook=playbook.name,
        rc=int(result.rc if result.rc is not None else 1),
        status=str(result.status),
        run_dir=run_dir,
        progress=progress,
    )
