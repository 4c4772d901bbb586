"""`build-archive`: a release-like archive of the Ollama lab double.

Same layout as the official `ollama-linux-<arch>.tgz` / `.tar.zst` release of that version:
  bin/ollama                    executable python3 script (the lab double's CLI: serve, list, ...)
  lib/ollama/llama-server       from 0.30.0 on (LLAMA_SERVER_SINCE), like the release: Ollama runs
                                GGUF models through this bundled binary. Here an executable stand-in
                                that only says what it is (the double serves everything itself).
  lib/ollama/LAB_DOUBLE.txt     says plainly what this is
  lib/ollama/vastllm_lab/ollama/...   the bundled lab double (standard library only)
plus `sha256sum.txt` next to it (`<sha256>  ./<file>`, like the release). Reproducible: fixed
mtimes, sorted entries, uid/gid 0, no gzip timestamp - building twice gives the same sha256.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Sequence

FORMATS = ("tar.zst", "tgz")
ARCHES = ("amd64", "arm64")
DEFAULT_MTIME = 1704067200  # 2024-01-01T00:00:00Z; SOURCE_DATE_EPOCH overrides it
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+~-]{0,63}$")
# Releases from 0.30.0 on bundle lib/ollama/llama-server (GGUF models run in it; without it a model
# load fails with "llama-server binary not found").
LLAMA_SERVER_SINCE = (0, 30, 0)

BIN_OLLAMA = '''#!/usr/bin/env python3
"""ollama: the vastllm LAB DOUBLE of Ollama (an emulator for tests and the lab, NOT Ollama).

See ../lib/ollama/LAB_DOUBLE.txt. Needs only python3 (>= 3.9).
"""
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, "lib", "ollama"))

from vastllm_lab.ollama.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''

LAB_DOUBLE_TXT = """\
THIS IS NOT OLLAMA.

This archive is the vastllm LAB DOUBLE of Ollama {version}: an emulator of Ollama's REST API
(/api/version, /api/tags, /api/show, /api/pull, /api/chat, /api/generate, /api/ps, /api/delete)
written in Python (standard library only), for tests and the local lab of vastllm, where the real
Ollama cannot be downloaded and no GPU exists.

- It runs no model. Replies are deterministic placeholder text ("Lab reply from <model>: ...").
- Pulls download nothing: they emulate progress and write a manifest plus tiny placeholder blobs.
- It has the same layout as the official release (bin/ollama, lib/ollama/, and from 0.30 on
  lib/ollama/llama-server, here a stand-in script) so that installers exercise their real path:
  download, checksum, unpack, layout check, service, readiness.
- Fault switches for tests: POST /lab/faults, or VASTLLM_LAB_FAULTS at start.

It is only ever used when asked for. Built by `vastllm-lab ollama build-archive`.
"""

LLAMA_SERVER = """#!/bin/sh
# llama-server: a stand-in of the vastllm LAB DOUBLE of Ollama {version} (NOT llama.cpp's server).
# Ollama >= 0.30 bundles its own llama-server here; the double serves models itself, never runs it.
case "$1" in
  --version|-v) echo "version: 0 (vastllm lab double stand-in for Ollama {version})"; exit 0 ;;
esac
echo "llama-server: vastllm lab double stand-in, not llama.cpp; see LAB_DOUBLE.txt" >&2
exit 1
"""

PACKAGE_INIT = (
    '"""Bundled for the vastllm lab double of Ollama (not the full vastllm package)."""\n'
)


class ArchiveError(RuntimeError):
    """The archive could not be built; the message says why."""


def package_files(version: str) -> list[tuple[str, bytes]]:
    """(path inside lib/ollama, content) of the bundled package, version baked in."""
    source = os.path.dirname(os.path.abspath(__file__))
    files: list[tuple[str, bytes]] = [
        ("vastllm_lab/__init__.py", PACKAGE_INIT.encode()),
    ]
    for name in sorted(os.listdir(source)):
        if not name.endswith(".py"):
            continue
        if name == "_version.py":
            data = (
                '"""The Ollama version this lab double reports (baked in by build-archive)."""\n\n'
                f"VERSION = {version!r}\n"
            ).encode()
        else:
            with open(os.path.join(source, name), "rb") as handle:
                data = handle.read()
        files.append((f"vastllm_lab/ollama/{name}", data))
    return files


def release_key(version: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version like 0.34.2, 0.30.0-rc1 or v0.21.0; () if not numeric."""
    match = re.match(r"^v?([0-9]+)\.([0-9]+)(?:\.([0-9]+))?", version)
    if not match:
        return ()
    return tuple(int(part or 0) for part in match.groups())


def bundles_llama_server(version: str) -> bool:
    """Whether the official Linux archive of `version` has lib/ollama/llama-server (>= 0.30.0)."""
    key = release_key(version)
    return bool(key) and key >= LLAMA_SERVER_SINCE


def archive_members(version: str) -> list[tuple[str, bytes | None, int]]:
    """(name, content or None for a directory, mode), sorted by name."""
    members: dict[str, tuple[bytes | None, int]] = {
        "bin": (None, 0o755),
        "bin/ollama": (BIN_OLLAMA.encode(), 0o755),
        "lib": (None, 0o755),
        "lib/ollama": (None, 0o755),
        "lib/ollama/LAB_DOUBLE.txt": (LAB_DOUBLE_TXT.format(version=version).encode(), 0o644),
    }
    if bundles_llama_server(version):
        members["lib/ollama/llama-server"] = (LLAMA_SERVER.format(version=version).encode(), 0o755)
    for rel, data in package_files(version):
        path = f"lib/ollama/{rel}"
        parent = os.path.dirname(path)
        while parent and parent not in members:
            members[parent] = (None, 0o755)
            parent = os.path.dirname(parent)
        members[path] = (data, 0o644)
    return [(name, data, mode) for name, (data, mode) in sorted(members.items())]


def tar_bytes(version: str, mtime: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, mode in archive_members(version):
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            info.mode = mode
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def compress(data: bytes, fmt: str) -> bytes:
    if fmt == "tgz":
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
            gz.write(data)
        return buffer.getvalue()
    zstd = shutil.which("zstd")
    if zstd is None:
        raise ArchiveError("the zstd command is not installed: install zstd or use --format tgz")
    result = subprocess.run(
        [zstd, "-q", "-19", "-T1", "-c"], input=data, capture_output=True, check=False
    )
    if result.returncode != 0:
        raise ArchiveError(f"zstd failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def archive_name(arch: str, fmt: str) -> str:
    return f"ollama-linux-{arch}.{fmt}"


def update_sha256sums(path: str, filename: str, digest: str) -> None:
    """Write/replace this file's line in sha256sum.txt, keeping the other files' lines."""
    lines: dict[str, str] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) == 2:
                    lines[parts[1]] = parts[0]
    lines[f"./{filename}"] = digest
    text = "".join(f"{sha}  {name}\n" for name, sha in sorted(lines.items()))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def build_archive(
    version: str, output: str, fmt: str = "tar.zst", arch: str = "amd64"
) -> tuple[str, str]:
    """Build the archive; return (path, sha256 hex)."""
    if not _VERSION_RE.match(version):
        raise ArchiveError(f"invalid version {version!r} (letters, digits, '.', '-', '+', '~')")
    if fmt not in FORMATS:
        raise ArchiveError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if arch not in ARCHES:
        raise ArchiveError(f"unknown arch {arch!r} (choose from {', '.join(ARCHES)})")
    mtime_text = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    mtime = int(mtime_text) if mtime_text.isdigit() else DEFAULT_MTIME
    data = compress(tar_bytes(version, mtime), fmt)
    digest = hashlib.sha256(data).hexdigest()
    filename = archive_name(arch, fmt)
    try:
        os.makedirs(output, exist_ok=True)
        path = os.path.join(output, filename)
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
        update_sha256sums(os.path.join(output, "sha256sum.txt"), filename, digest)
    except OSError as exc:
        raise ArchiveError(f"cannot write to {exc.filename or output}: {exc.strerror}") from None
    return path, digest


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vastllm-lab ollama build-archive",
        description="Build a release-like archive (bin/ollama + lib/ollama/) of the Ollama "
        "lab double - an emulator, not Ollama.",
    )
    parser.add_argument("--version", required=True, help="the Ollama version it reports")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--format", default="tar.zst", choices=FORMATS)
    parser.add_argument("--arch", default="amd64", choices=ARCHES)
    args = parser.parse_args(list(argv))
    try:
        path, digest = build_archive(args.version, args.output, args.format, args.arch)
    except ArchiveError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 1
    sys.stdout.write(f"{path}\nsha256 {digest}\n")
    return 0
