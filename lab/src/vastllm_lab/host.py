"""The local lab host: a Docker container that stands in for a vast.ai instance.

Like a vast.ai instance it runs Debian as root without systemd, has a ``/workspace`` volume and is
reached over SSH. ``vastllm-lab host up`` builds the base image when it is missing (debootstrap
from Debian's packages, then ``docker import``: no registry is needed), starts the container and
writes an Ansible inventory file that describes it.

  vastllm-lab host image [--rebuild]   build the base image (cached in Docker)
  vastllm-lab host up                  start the lab host and write inventory/lab.yml
  vastllm-lab host down [--volumes]    remove the lab host (and its /workspace volume)
  vastllm-lab host status              say whether it runs
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

IMAGE = "vastllm/lab-base:bookworm"
SUITE = "bookworm"
MIRROR = os.environ.get("VASTLLM_LAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What a vast.ai image has: python3, sshd, CA certificates, curl. Not supervisor, zstd, redis or
# python3-venv: the roles install those, as they must on a real instance.
PACKAGES = ("python3", "openssh-server", "ca-certificates", "curl", "iproute2", "procps", "less")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
LAB_NOTICE = (
    "vastllm lab host: a Docker container standing in for a vast.ai instance (not a GPU host)\n"
)


class LabError(RuntimeError):
    """A failure with a message meant for the user."""


@dataclass(frozen=True)
class HostSpec:
    """Where the lab host lives and how it is reached."""

    name: str
    ssh_port: int
    proxy_port: int
    state_dir: Path
    inventory: Path

    @property
    def key_file(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def volume(self) -> str:
        return f"{self.name}-workspace"


def render_inventory(spec: HostSpec) -> str:
    """The inventory file that describes the lab host (pure)."""
    mirror = "file:///opt/vastllm-lab/mirror"
    return f"""# Written by `vastllm-lab host up`. The local lab host: a Docker container
# standing in for a vast.ai instance (root, no systemd, /workspace, reached over SSH).
# Ollama there is the vastllm lab double, installed from a release-like archive through
# the ollama role's real install path.
vastllm:
  hosts:
    {spec.name}:
      ansible_host: 127.0.0.1
      ansible_port: {spec.ssh_port}
      ansible_user: root
      ansible_ssh_private_key_file: {spec.key_file}
      ansible_python_interpreter: /usr/bin/python3
      vastllm_lab: true
      ollama_archive_url: {mirror}/ollama-linux-amd64.tar.zst
      ollama_archive_checksum: sha256:{mirror}/sha256sum.txt
      # The proxy is published on 127.0.0.1:{spec.proxy_port} of this machine through Docker, so it
      # listens on every interface of the container, which makes its API key mandatory.
      proxy_host: 0.0.0.0
      proxy_port: 8000
      proxy_public_url: http://127.0.0.1:{spec.proxy_port}
"""


def _run(argv: list[str], *, input_text: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(argv, input=input_text, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise LabError(f"`{' '.join(argv[:4])} ...` failed (exit {proc.returncode}): {detail}")
    return proc.stdout


def docker_problem(image: str | None = None) -> str | None:
    """Why Docker cannot be used here (None when it can): no `docker` command, an engine that does
    not answer, or - when `image` is given - that image missing. The one Docker check of the
    repository (the lab host, the tests and the benchmarks use it)."""
    if shutil.which("docker") is None:
        return "docker is not installed: run scripts/setup.sh first"
    proc = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return "the Docker engine does not answer (`docker info` failed): start dockerd"
    if image is not None and not image_exists(image):
        return f"the Docker image {image} is missing: run scripts/setup.sh first"
    return None


def _docker_ok() -> None:
    problem = docker_problem()
    if problem is not None:
        raise LabError(problem)


def image_exists(image: str = IMAGE) -> bool:
    proc = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    return proc.returncode == 0


def build_image(*, rebuild: bool = False, image: str = IMAGE) -> bool:
    """Build the base image with debootstrap + docker import. Returns True when it built one."""
    _docker_ok()
    if image_exists(image) and not rebuild:
        return False
    if shutil.which("debootstrap") is None:
        raise LabError(
            "debootstrap is not installed: run scripts/setup.sh first (apt-get install debootstrap)"
        )
    if os.geteuid() != 0:
        raise LabError("building the lab base image needs root (debootstrap)")
    with tempfile.TemporaryDirectory(prefix="vastllm-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        print(f"building {image} with debootstrap from {MIRROR} (about a minute)...", flush=True)
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                MIRROR,
            ]
        )
        _customize_rootfs(root)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        proc = subprocess.run(
            ["docker", "import", "--change", 'CMD ["/usr/sbin/sshd", "-D", "-e"]', "-", image],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        tar.wait()
        if proc.returncode != 0 or tar.returncode != 0:
            raise LabError(f"docker import failed: {proc.stderr.strip()}")
    print(f"built {image}", flush=True)
    return True


def _customize_rootfs(root: Path) -> None:
    (root / "etc/apt/sources.list").write_text(
        f"deb {MIRROR} {SUITE} main\n"
        f"deb {MIRROR} {SUITE}-updates main\n"
        f"deb {MIRROR.replace('/debian', '/debian-security')} {SUITE}-security main\n"
    )
    # As in Docker's own Debian images: packages never start services inside the container.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    # Outbound TLS may be intercepted here: the container trusts what this machine trusts.
    if HOST_CA_BUNDLE.exists():
        shutil.copyfile(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
    (root / "workspace").mkdir(exist_ok=True)
    (root / "run/sshd").mkdir(parents=True, exist_ok=True)
    (root / "root/.ssh").mkdir(mode=0o700, parents=True, exist_ok=True)
    sshd_conf = root / "etc/ssh/sshd_config.d/vastllm-lab.conf"
    sshd_conf.write_text(
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"
    )
    (root / "etc/vastllm-lab-host").write_text(LAB_NOTICE)
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def _container_running(name: str) -> bool:
    out = _run(
        ["docker", "ps", "--filter", f"name=^{name}$", "--format", "{{.Names}}"], check=False
    )
    return out.strip() == name


def _ensure_key(spec: HostSpec) -> str:
    spec.state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(spec.state_dir, 0o700)
    if not spec.key_file.exists():
        _run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "vastllm-lab",
                "-f",
                str(spec.key_file),
            ]
        )
    return (spec.key_file.with_suffix(".pub")).read_text()


def _wait_ssh(spec: HostSpec, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    argv = [
        "ssh", "-i", str(spec.key_file), "-p", str(spec.ssh_port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR",
        "root@127.0.0.1", "true",
    ]  # fmt: skip
    last = ""
    while time.monotonic() < deadline:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return
        last = proc.stderr.strip()
        time.sleep(1)
    raise LabError(
        f"the lab host's SSH on 127.0.0.1:{spec.ssh_port} did not answer in {timeout:.0f} s: {last}"
    )


def up(spec: HostSpec) -> None:
    build_image()
    pubkey = _ensure_key(spec)
    if not _container_running(spec.name):
        _run(["docker", "rm", "-f", spec.name], check=False)
        _run(
            [
                "docker", "run", "-d", "--name", spec.name, "--hostname", spec.name, "--init",
                "-p", f"127.0.0.1:{spec.ssh_port}:22",
                "-p", f"127.0.0.1:{spec.proxy_port}:8000",
                "-v", f"{spec.volume}:/workspace",
                "--label", "vastllm_lab=host",
                IMAGE,
            ]
        )  # fmt: skip
    _run(
        ["docker", "exec", "-i", spec.name, "sh", "-c",
         # added, not replaced: another checkout may use the same lab host with its own key
         "umask 077 && mkdir -p /root/.ssh && f=/root/.ssh/authorized_keys && touch $f"
         ' && key=$(cat) && (grep -qxF "$key" $f || echo "$key" >> $f)'],
        input_text=pubkey,
    )  # fmt: skip
    _wait_ssh(spec)
    spec.inventory.parent.mkdir(parents=True, exist_ok=True)
    spec.inventory.write_text(render_inventory(spec))
    print(
        f"lab host {spec.name} is up: ssh -p {spec.ssh_port} root@127.0.0.1 (key {spec.key_file})"
    )
    print(f"inventory written to {spec.inventory}")


def down(spec: HostSpec, *, volumes: bool) -> None:
    _run(["docker", "rm", "-f", spec.name], check=False)
    if volumes:
        _run(["docker", "volume", "rm", spec.volume], check=False)
    print(f"lab host {spec.name} removed")


def main(argv: list[str]) -> int:
    repo = Path(os.environ.get("VASTLLM_REPO", Path.cwd()))
    parser = argparse.ArgumentParser(
        prog="vastllm-lab host",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    image_p = sub.add_parser("image", help="build the lab base image if missing")
    image_p.add_argument("--rebuild", action="store_true")
    for name in ("up", "down", "status"):
        p = sub.add_parser(name)
        p.add_argument("--name", default="vastllm-lab")
        p.add_argument("--ssh-port", type=int, default=2222)
        p.add_argument("--proxy-port", type=int, default=8000)
        p.add_argument("--state-dir", type=Path, default=repo / ".lab")
        p.add_argument("--inventory", type=Path, default=repo / "inventory" / "lab.yml")
        if name == "down":
            p.add_argument(
                "--volumes", action="store_true", help="also delete the /workspace volume"
            )
    args = parser.parse_args(argv)
    try:
        if args.command == "image":
            build_image(rebuild=args.rebuild)
            return 0
        spec = HostSpec(args.name, args.ssh_port, args.proxy_port, args.state_dir.resolve(),
                        args.inventory.resolve())  # fmt: skip
        if args.command == "up":
            up(spec)
        elif args.command == "down":
            down(spec, volumes=args.volumes)
        else:
            running = _container_running(spec.name)
            print(f"{spec.name}: {'running' if running else 'not running'}")
            return 0 if running else 1
    except LabError as exc:
        print(f"vastllm-lab host: {exc}", file=sys.stderr)
        return 1
    return 0
