"""Run a playbook through ansible-runner, showing ``Progress`` lines instead of Ansible's output.

The run's events stay in the runs folder, ``<state>/runs/<time>-<command>/``, with a redacted
``stdout`` written from them. Secrets known to the CLI (the vast.ai key, the proxy key), the values
of secret-looking environment variables and extra vars (names with ``key``, ``token``,
``password``, ``secret``) are cut out of every event before ansible-runner writes it, and of every
file left in the folder afterwards - also when the run fails, raises or is interrupted (Ctrl-C).

Nothing secret is put on disk by the runner: environment files are not written
(``suppress_env_files``; the vast.ai key reaches Ansible only through the subprocess's environment),
ansible-runner's ``artifacts/<ident>/command`` (a dump of that whole environment) is deleted as soon
as the process runs and again at the end, Ansible's raw output file is not written
(``suppress_output_file``), and extra vars go to ``ansible-playbook`` as ``-e @file`` (0600 files
under ``env/`` of the run folder, deleted after the run) instead of on the command line.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from vastllm.cli.progress import Progress, redact, redact_in_place

SECRET_NAME = re.compile(r"key|token|password|secret|passwd", re.IGNORECASE)
# Secret-looking names whose values are not secret (a path, a public key, a switch).
NOT_SECRET_NAME = re.compile(r"public|_file$|_path$|_dir$|require", re.IGNORECASE)


@dataclass
class RunResult:
    playbook: str
    rc: int
    status: str
    run_dir: Path
    progress: Progress
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> vastllm_* facts

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


def secret_values(variables: Mapping[str, Any]) -> list[str]:
    """The values of secret-looking names (``*key*``, ``*token*``, ``*password*``, ``*secret*``),
    nested mappings included, to redact from the logs (pure)."""
    found: list[str] = []
    for name, value in variables.items():
        if isinstance(value, Mapping):
            found += secret_values(value)
        elif (
            isinstance(value, str)
            and len(value) >= 8
            and SECRET_NAME.search(str(name))
            and not NOT_SECRET_NAME.search(str(name))
        ):
            found.append(value)
    return found


def parse_extra_var(item: str) -> dict[str, Any]:
    """One ``-e`` value (``k=v k2=v2``, or YAML/JSON) as ansible-playbook reads it."""
    text = item.strip()
    if text.startswith(("{", "[")):
        import yaml

        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"extra vars must be a mapping, not {type(data).__name__}")
        return data
    from ansible.parsing.splitter import parse_kv

    return dict(parse_kv(text))


def _write_vars(path: Path, variables: Mapping[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(dict(variables), handle)


def forget_run_secrets(run_dir: Path, var_files: Iterable[Path] = ()) -> None:
    """Delete what holds secrets by design: ansible-runner's command dumps (the whole process
    environment), its env files, and the extra-vars files of this run."""
    for path in [
        *var_files,
        *run_dir.glob("artifacts/*/command"),
        *run_dir.glob("artifacts/*/env.list"),
    ]:
        path.unlink(missing_ok=True)
    for name in ("envvars", "extravars", "cmdline", "passwords", "ssh_key"):
        (run_dir / "env" / name).unlink(missing_ok=True)


def run_playbook(
    playbook: Path,
    *,
    repo: Path,
    run_dir: Path,
    inventory: str,
    extravars: Mapping[str, Any] | None = None,
    extra_vars: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    secrets: Callable[[], Iterable[str]] = tuple,
    verbose: bool = False,
    out: TextIO | None = None,
    runner: Callable[..., Any] | None = None,
) -> RunResult:
    """Run ``playbook`` (ansible-runner, from the checkout ``repo``) and return its outcome.

    ``extra_vars`` are ``-e`` values as the user gave them (``@file``, ``k=v`` or YAML); the CLI's
    own ``extravars`` come after them and win. ``runner`` replaces ``ansible_runner.run`` (tests).
    """
    if runner is None:
        import ansible_runner

        runner = ansible_runner.run

    stream = sys.stderr if out is None else out
    progress = Progress(verbose=True)
    tty = stream.isatty() and not verbose
    shown_status = [False]
    facts: dict[str, dict[str, Any]] = {}
    found: list[str] = [v for k, v in os.environ.items() if SECRET_NAME.search(k)
                        and not NOT_SECRET_NAME.search(k) and len(v) >= 8]  # fmt: skip
    env_dir = run_dir / "env"
    env_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(env_dir, 0o700)
    var_files: list[Path] = []
    cmdline: list[str] = list(extra_args)
    groups: list[Any] = [*extra_vars, *([dict(extravars)] if extravars else [])]
    for number, item in enumerate(groups):
        if isinstance(item, str) and item.strip().startswith("@"):
            cmdline += ["-e", item.strip()]  # a file of the user's: only its path is passed
            continue
        variables = item if isinstance(item, Mapping) else parse_extra_var(item)
        found += secret_values(variables)
        path = env_dir / f"vars-{number:02d}.json"
        var_files.append(path)
        _write_vars(path, variables)
        cmdline += ["-e", f"@{path}"]

    def all_secrets() -> list[str]:
        return [*secrets(), *found]

    def emit(line: str) -> None:
        if tty and shown_status[0]:
            stream.write("\r\033[K")
            shown_status[0] = False
        stream.write(line + "\n")
        stream.flush()

    stdout_log: list[TextIO] = []

    def log_stdout(event: Mapping[str, Any]) -> None:
        text = str(event.get("stdout") or "")
        if not text:
            return
        if not stdout_log:
            folder = run_dir / "artifacts" / playbook.stem
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / "stdout", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            stdout_log.append(os.fdopen(fd, "w", encoding="utf-8"))
        stdout_log[0].write(text + "\n")

    def keep_facts(event: Mapping[str, Any]) -> None:
        data = event.get("event_data")
        if event.get("event") != "runner_on_ok" or not isinstance(data, Mapping):
            return
        res = data.get("res")
        new = res.get("ansible_facts") if isinstance(res, Mapping) else None
        if isinstance(new, Mapping):
            host = str(data.get("host") or "")
            facts.setdefault(host, {}).update(
                {k: v for k, v in new.items() if str(k).startswith("vastllm_")}
            )

    def status(data: Mapping[str, Any], runner_config: Any = None) -> None:
        if data.get("status") == "running":  # the process runs: its env dump is not needed
            forget_run_secrets(run_dir)

    def handler(event: dict[str, Any]) -> bool:
        redact_in_place(event, all_secrets())
        log_stdout(event)
        keep_facts(event)
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
    try:
        result = runner(
            private_data_dir=str(run_dir),
            project_dir=str(repo),
            playbook=str(playbook),
            inventory=inventory,
            cmdline=shlex.join(cmdline) if cmdline else None,
            envvars=env,
            suppress_env_files=True,
            suppress_output_file=True,
            quiet=True,
            ident=playbook.stem,
            event_handler=handler,
            status_handler=status,
            rotate_artifacts=0,
        )
    finally:  # also on Ctrl-C or a crash: nothing secret stays behind
        for handle in stdout_log:
            handle.close()
        if tty and shown_status[0]:
            stream.write("\r\033[K")
            stream.flush()
        forget_run_secrets(run_dir, var_files)
        scrub_files(run_dir, all_secrets())
    return RunResult(
        playbook=playbook.name,
        rc=int(result.rc if result.rc is not None else 1),
        status=str(result.status),
        run_dir=run_dir,
        progress=progress,
        facts=facts,
    )
