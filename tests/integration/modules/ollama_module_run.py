"""Helpers: run our Ansible modules, named by FQCN (`vastllm.stack.ollama_model`), two ways.

* `run_module`: through the real CLI, `ansible localhost -m <fqcn> -a <json>`. The repository's
  ansible.cfg finds the collection (the checkout, linked into `.cache/collections`), so AnsiballZ
  packs the module and its module_utils exactly as for a managed host; results come back through
  the `json` callback. About 2 s per call.
* `direct_command` / `run_direct`: the module run by Python with a JSON args file, the way Ansible
  documents debugging a module, imported from the collection
  (`ansible_collections.vastllm.stack.plugins.modules.<name>`, as AnsiballZ imports it). About
  0.3 s per call, so most tests use it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from vastllm_lab.testing import ansible_env

REPO = Path(__file__).resolve().parents[3]
COLLECTIONS = REPO / ".cache" / "collections"
ANSIBLE = str(Path(sys.executable).with_name("ansible"))


def python_module(fqcn: str) -> str:
    """`vastllm.stack.x` -> `ansible_collections.vastllm.stack.plugins.modules.x`."""
    namespace, collection, name = fqcn.split(".")
    return f"ansible_collections.{namespace}.{collection}.plugins.modules.{name}"


def module_env() -> dict[str, str]:
    return ansible_env(
        REPO,
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
        ANSIBLE_LOCALHOST_WARNING="False",
    )


def module_command(
    module: str, args: dict[str, Any], check: bool = False, diff: bool = False
) -> list[str]:
    command = [
        ANSIBLE,
        "localhost",
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        "-m",
        module,
        "-a",
        json.dumps(args),
    ]
    if check:
        command.append("--check")
    if diff:
        command.append("--diff")
    return command


def parse_result(stdout: str, stderr: str) -> dict[str, Any]:
    try:
        data = json.loads(stdout)
    except ValueError:
        raise AssertionError(f"ansible printed no JSON:\n{stdout}\n{stderr}") from None
    result: dict[str, Any] = data["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result


def run_module(
    module: str,
    args: dict[str, Any],
    check: bool = False,
    diff: bool = False,
    timeout: float = 120,
) -> dict[str, Any]:
    proc = subprocess.run(
        module_command(module, args, check, diff),
        cwd=REPO,
        env=module_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return parse_result(proc.stdout, proc.stderr)


_BOOT = (
    "import runpy, sys; sys.path.insert(0, sys.argv[1]); "
    "module = sys.argv[2]; sys.argv = [module, sys.argv[3]]; "
    "runpy.run_module(module, run_name='__main__', alter_sys=True)"
)


def direct_command(
    module: str, args: dict[str, Any], args_dir: Path, check: bool = False, diff: bool = False
) -> list[str]:
    """Command running the module `module` (FQCN) directly with `{"ANSIBLE_MODULE_ARGS": ...}`."""
    payload = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    args_dir.mkdir(parents=True, exist_ok=True)
    index = len(list(args_dir.glob("args-*.json")))
    args_file = args_dir / f"args-{index}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    return [
        sys.executable,
        "-c",
        _BOOT,
        str(COLLECTIONS),
        python_module(module),
        str(args_file),
    ]


def parse_direct(stdout: str, stderr: str) -> dict[str, Any]:
    """The module's JSON answer (the last line that parses as a JSON object)."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                result: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            return result
    raise AssertionError(f"the module printed no JSON:\n{stdout}\n{stderr}")


def run_direct(
    module: str,
    args: dict[str, Any],
    args_dir: Path,
    check: bool = False,
    diff: bool = False,
    timeout: float = 120,
) -> dict[str, Any]:
    proc = subprocess.run(
        direct_command(module, args, args_dir, check, diff),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result = parse_direct(proc.stdout, proc.stderr)
    assert (proc.returncode != 0) == bool(result.get("failed")), (proc.returncode, result)
    return result


def tags(url: str) -> dict[str, str]:
    """Present models at an Ollama URL: name -> digest."""
    with urllib.request.urlopen(f"{url}/api/tags", timeout=10) as response:
        data = json.loads(response.read())
    return {m["name"]: m["digest"] for m in data["models"]}
