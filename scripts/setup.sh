#!/usr/bin/env bash
# vastllm set-up on a fresh Debian/Ubuntu machine with Python >= 3.11. Safe to run again: it only does
# what is missing. Leaves .venv/ with the vastllm package (editable) and every controller tool, a running
# Docker engine, the Ansible collections and the local lab base image.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
say() { printf '\n== %s\n' "$*"; }

# --- Python >= 3.11 ---------------------------------------------------------------------------------------
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "vastllm needs Python >= 3.11 ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
  exit 1
}

# --- System packages ------------------------------------------------------------------------------------
packages=(python3-venv python3-pip debootstrap redis-server zstd openssh-client git curl ca-certificates)
command -v dockerd >/dev/null 2>&1 || packages+=(docker.io)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "Installing system packages: ${missing[*]}"
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- Docker engine ----------------------------------------------------------------------------------------
if ! $SUDO docker info >/dev/null 2>&1; then
  say "Starting the Docker engine"
  if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    $SUDO systemctl start docker
  else
    $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  fi
  for _ in $(seq 1 60); do $SUDO docker info >/dev/null 2>&1 && break; sleep 1; done
  $SUDO docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/dockerd.log" >&2; exit 1; }
fi

# --- Virtualenv with the package and the controller/test tools -----------------------------------------------
stamp=.venv/.vastllm-setup
want=$(cat pyproject.toml lab/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/vastllm-lab ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "Installing the Python tools into .venv"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  # The product (proxy, installed on GPU hosts), then, apart, the lab doubles (tests and the local lab
  # only). Two steps: upgrading a venv whose vastllm still shipped the vastllm-lab script removes that
  # script with the old vastllm, which in one step could happen after vastllm-lab had written it.
  .venv/bin/python -m pip install -q -e ".[test]"
  .venv/bin/python -m pip install -q -e ./lab
  echo "$want" >"$stamp"
fi

# --- Ansible collections ----------------------------------------------------------------------------------
if ! .venv/bin/ansible-galaxy collection list community.docker 2>/dev/null | grep -q community.docker; then
  say "Installing the Ansible collections"
  if curl -fsS -m 10 -o /dev/null https://galaxy.ansible.com/api/ 2>/dev/null; then
    .venv/bin/ansible-galaxy collection install -r requirements.yml -p .cache/collections
  else
    echo "Ansible Galaxy is not reachable: using the collections of the ansible community package (PyPI)"
    .venv/bin/python -m pip install -q 'ansible>=12,<13'
  fi
fi

# --- This checkout as the collection vastllm.stack ---------------------------------------------------------
# ansible.cfg looks for collections in .cache/collections first: a link there makes the checkout itself the
# collection, so playbooks, Molecule and the inventory use the working tree by FQCN, with no build step.
link=.cache/collections/ansible_collections/vastllm/stack
if [ "$(readlink "$link" 2>/dev/null)" != "$REPO" ]; then
  mkdir -p "$(dirname "$link")"
  ln -sfn "$REPO" "$link"
fi

# --- Claude Code (npm), the client the end-to-end test drives through the proxy -------------------------
if [ ! -x .cache/npm/node_modules/.bin/claude ]; then
  say "Installing Claude Code into .cache/npm"
  command -v npm >/dev/null 2>&1 || $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
  npm install --no-audit --no-fund --loglevel=error --prefix .cache/npm @anthropic-ai/claude-code ||
    echo "Claude Code could not be installed from npm: its end-to-end test will be skipped" >&2
fi

# --- The local lab base image -----------------------------------------------------------------------------------
say "Lab base image"
$SUDO env VASTLLM_REPO="$REPO" .venv/bin/vastllm-lab host image
echo "set-up done: . .venv/bin/activate"
