"""Where the CLI keeps things, its configuration file and how it finds the checkout.

Layout (``$VASTLLM_HOME`` puts everything under one directory instead):

- configuration: ``$XDG_CONFIG_HOME/vastllm/config.toml`` (default ``~/.config/vastllm/``)
- Claude Code environment files: ``~/.config/vastllm/<label>.env`` (mode 0600)
- state: ``$XDG_STATE_HOME/vastllm/`` (default ``~/.local/state/vastllm/``):
  ``runs/<time>-<command>/`` (ansible-runner artifacts), ``tunnels/<label>.json`` (+ ``.log``),
  ``inventory/<label>.yml``, ``known_hosts/<label>``
"""

from __future__ import annotations

import os
import sys
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_LABEL = "vastllm-1"
DEFAULT_PREFIX = "vastllm"
DEFAULT_API_URL = "https://console.vast.ai"
DEFAULT_IMAGE = "vastai/base-image:cuda-12.4-ubuntu22.04"


class CliError(Exception):
    """A failure with a message meant for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Paths:
    """Every file location of the CLI."""

    config_dir: Path
    state_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    def env_file(self, label: str) -> Path:
        return self.config_dir / f"{label}.env"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    def tunnel_file(self, label: str) -> Path:
        return self.state_dir / "tunnels" / f"{label}.json"

    def tunnel_log(self, label: str) -> Path:
        return self.state_dir / "tunnels" / f"{label}.log"

    def inventory_file(self, label: str) -> Path:
        return self.state_dir / "inventory" / f"{label}.yml"

    def known_hosts(self, label: str) -> Path:
        return self.state_dir / "known_hosts" / label

    def new_run_dir(self, command: str, now: float | None = None) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now))
        base = self.runs_dir / f"{stamp}-{command}"
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}.{n}")
        path.mkdir(parents=True, mode=0o700)
        return path


def paths_from_env(environ: Mapping[str, str], home: Path) -> Paths:
    """The locations for this environment (pure)."""
    root = environ.get("VASTLLM_HOME", "").strip()
    if root:
        base = Path(root).expanduser()
        return Paths(config_dir=base, state_dir=base / "state")
    config = Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "vastllm"
    state = Path(environ.get("XDG_STATE_HOME") or home / ".local" / "state") / "vastllm"
    return Paths(config_dir=config, state_dir=state)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700 for the last part."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 (never readable by others, not even
    for a moment)."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class Settings:
    """The configuration file's keys (all optional); flags override them."""

    label: str = DEFAULT_LABEL
    label_prefix: str = DEFAULT_PREFIX
    max_price: float | None = None
    gpu: list[str] = field(default_factory=lambda: ["RTX_4090", "RTX_3090", "RTX_A6000"])
    num_gpus: int = 1
    min_vram: float = 24.0
    disk: float = 80.0
    min_reliability: float = 0.97
    verified_only: bool = True
    region: str = ""
    image: str = DEFAULT_IMAGE
    ssh_key: str = "~/.ssh/id_ed25519"
    connect_with: str = "auto"
    local_port: int = 8000
    ollama_port: int = 0
    remote_proxy_port: int = 8000
    remote_ollama_port: int = 11434
    bandwidth_down_gb_per_hour: float = 2.0
    bandwidth_up_gb_per_hour: float = 0.5
    context_window: int = 65536
    idle_warning_minutes: float = 30.0
    api_url: str = ""
    extra_vars: list[str] = field(default_factory=list)
    wait_timeout: int = 900
    # The stack playbook `up` runs, relative to the checkout (the lab: playbooks/lab.yml).
    playbook: str = "site.yml"


def settings_from(data: Mapping[str, Any], source: str) -> Settings:
    """Settings from a parsed configuration file (unknown keys and wrong types are errors)."""
    known = {f.name: f for f in fields(Settings)}
    settings = Settings()
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise CliError(f"{source}: unknown setting {key!r} (see docs/cli.md)", 2)
        default = getattr(settings, name)
        if isinstance(default, list):
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list):
                raise CliError(f"{source}: {key} must be a list", 2)
            value = [str(v) for v in value]
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise CliError(f"{source}: {key} must be true or false", 2)
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise CliError(f"{source}: {key} must be a whole number", 2)
        elif isinstance(default, float) or name == "max_price":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CliError(f"{source}: {key} must be a number", 2)
            value = float(value)
        elif isinstance(default, str) and not isinstance(value, str):
            raise CliError(f"{source}: {key} must be a string", 2)
        setattr(settings, name, value)
    return settings


def load_settings(paths: Paths) -> Settings:
    path = paths.config_file
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Settings()
    except OSError as err:
        raise CliError(f"cannot read {path}: {err}", 2) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise CliError(f"{path}: not valid TOML: {err}", 2) from None
    return settings_from(data, str(path))


def _is_checkout(path: Path) -> bool:
    return (path / "site.yml").is_file() and (path / "galaxy.yml").is_file()


def find_repo(environ: Mapping[str, str], cwd: Path, module_file: Path) -> Path:
    """The checkout holding the playbooks: ``$VASTLLM_REPO``, else the current directory or a
    parent of it, else the checkout this package was installed from (editable install)."""
    explicit = environ.get("VASTLLM_REPO", "").strip()
    if explicit:
        path = Path(explicit).expanduser().resolve()
        if not _is_checkout(path):
            raise CliError(f"VASTLLM_REPO={explicit} is not a vastllm checkout (no site.yml)", 2)
        return path
    for candidate in (cwd, *cwd.parents, *module_file.resolve().parents):
        if _is_checkout(candidate):
            return candidate
    raise CliError(
        "cannot find the vastllm checkout (site.yml, playbooks/): run vastllm from inside it or "
        "set VASTLLM_REPO",
        2,
    )


def collection_import_path(repo: Path) -> None:
    """Make ``ansible_collections.vastllm.stack`` importable (the checkout is the collection,
    linked into ``.cache/collections`` by scripts/setup.sh)."""
    path = str(repo / ".cache" / "collections")
    if path not in sys.path:
        sys.path.insert(0, path)
