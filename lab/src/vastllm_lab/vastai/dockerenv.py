"""The ``env`` of a create request, as vast.ai reads it: Docker flags or the CLI's mapping.

The spec documents ``env`` as a string of Docker flags (``"-p 8000:8000 -e K=V"``); the ``vastai``
CLI parses that string itself and sends the mapping ``{"-p 8000:8000": "1", "K": "V"}``. Both
forms end up as the same mapping here.

Pure functions, no state.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any


class EnvError(ValueError):
    """An ``env`` the API would refuse (not a string or an object, unbalanced quotes)."""


def parse_docker_flags(text: str) -> dict[str, str]:
    """``"-p 8000:8000 -e K=V -e 'M=a b'"`` -> ``{"-p 8000:8000": "1", "K": "V", "M": "a b"}``.

    ``-p`` takes ``[host:]container[/proto]``; ``-e`` takes ``NAME=value`` (the value may hold
    ``=``); other flags and stray words are ignored, as by the API.
    """
    try:
        words = shlex.split(text)
    except ValueError as err:
        raise EnvError(f"env is not a valid list of Docker flags: {err}") from None
    env: dict[str, str] = {}
    flag: str | None = None
    for word in words:
        if flag is None:
            if word in ("-p", "-e", "-h", "-v", "-n"):
                flag = word
            elif word.startswith("--env="):
                _put_var(env, word[len("--env=") :])
            continue
        if flag == "-p":
            if word and set(word) <= set("0123456789:/tcpud"):
                env[f"-p {word}"] = "1"
        elif flag == "-e":
            _put_var(env, word)
        flag = None
    return env


def _put_var(env: dict[str, str], assignment: str) -> None:
    name, sep, value = assignment.partition("=")
    if sep and name and not any(ch.isspace() for ch in name):
        env[name] = value


def normalize_env(raw: Any) -> dict[str, str]:
    """A create request's ``env`` (string, mapping or absent) as a mapping (EnvError if neither)."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        return parse_docker_flags(raw)
    if isinstance(raw, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in raw.items()}
    raise EnvError("env must be a string of Docker flags or an object")


def requested_ports(env: Mapping[str, str]) -> list[str]:
    """Container ports of ``-p`` entries: ``{"-p 8000:8000": "1"}`` -> ``["8000/tcp"]``."""
    ports = []
    for key in env:
        if key.startswith("-p "):
            container = key[3:].strip().split(":")[-1]
            if "/" not in container:
                container += "/tcp"
            if container not in ports:
                ports.append(container)
    return ports


def container_vars(env: Mapping[str, str]) -> list[list[str]]:
    """The variables of ``env`` as ``extra_env`` pairs (Docker flags left out)."""
    return [[k, v] for k, v in env.items() if not k.startswith("-")]
