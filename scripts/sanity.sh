#!/usr/bin/env bash
# `ansible-test sanity` of the collection vastllm.stack as it ships: builds the artifact, installs it
# into a temporary ansible_collections tree outside the checkout (ansible-test wants its working
# directory inside ansible_collections/NAMESPACE/NAME and resolves the .cache link back to the
# checkout) and runs there:
#   - every sanity test on Python 3.11 (the controller's), pylint on plugins/ only (see below);
#   - compile and import of the module code on every other Python the modules support
#     (tests/config.yml) that is installed here, on PATH or under pyenv; the missing ones are named.
# Exceptions are in tests/sanity/ignore-2.19.txt, each with its reason.
#
#   scripts/sanity.sh            # about 1 min once ansible-test's virtual environments exist
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
BIN=${VASTLLM_VENV_BIN:-$REPO/.venv/bin}
PYTHON_VERSION=3.11 # the controller's, for every test
OTHER_PYTHONS=${VASTLLM_SANITY_PYTHONS-3.9 3.10 3.12 3.13} # module code only (tests/config.yml)

# ansible-test bootstraps pip in each of its virtual environments with a script it downloads from
# ci-files.testing.ansible.com, which CI cannot reach. This stand-in does the same from PyPI: pip from
# ensurepip, then the pip version ansible-test asks for.
requirements_py=$("$BIN/python" -c 'import ansible_test._internal.python_requirements as m; print(m.__file__)')
pip_version=$(sed -n "s/^ *pip='\([0-9.]*\)',$/\1/p" "$requirements_py")
[ -n "$pip_version" ] || { echo "cannot tell which pip ansible-test bootstraps ($requirements_py)" >&2; exit 1; }
get_pip="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if [ ! -s "$get_pip" ]; then
  mkdir -p "$(dirname "$get_pip")"
  cat >"$get_pip" <<'EOF'
"""Stand-in for get-pip.py (written by vastllm's scripts/sanity.sh): ensurepip, then pip install."""
import os
import subprocess
import sys

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
cert = ["--cert", CA_BUNDLE] if os.path.exists(CA_BUNDLE) else []
subprocess.check_call([sys.executable, "-m", "pip", "install", *cert, *args])
EOF
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/vastllm-sanity.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Nothing of the checkout's configuration: its collections path already holds vastllm.stack (the link).
: >"$work/ansible.cfg"
export ANSIBLE_CONFIG="$work/ansible.cfg"
unset ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_PATHS

echo "== building the collection artifact"
"$BIN/ansible-galaxy" collection build --output-path "$work/dist" "$REPO" >/dev/null
artifact=$(echo "$work"/dist/vastllm-stack-*.tar.gz)
# What ships must let the proxy role build its wheel; development files must not ship.
listing=$(tar -tzf "$artifact")
for needed in MANIFEST.json pyproject.toml README.md src/vastllm/proxy/__main__.py \
  plugins/doc_fragments/vastai.py tests/sanity/ignore-2.19.txt; do
  grep -qx "$needed" <<<"$listing" || { echo "the artifact lacks $needed" >&2; exit 1; }
done
if grep -E '^(lab|tests/unit|tests/integration|molecule|benchmarks|scripts|\.venv|\.cache)/' <<<"$listing" >&2; then
  echo "the artifact holds development files (above): fix build_ignore in galaxy.yml" >&2
  exit 1
fi

echo "== installing it into $work/collections"
ANSIBLE_COLLECTIONS_PATH="$work/collections" \
  "$BIN/ansible-galaxy" collection install --offline --force -p "$work/collections" "$artifact" >/dev/null
cd "$work/collections/ansible_collections/vastllm/stack"

# The Pythons ansible-test may use: the venv's, and real interpreters (pyenv shims left out, they fail
# for versions not selected).
path=$BIN
IFS=: read -ra entries <<<"$PATH"
for entry in "${entries[@]}"; do
  case $entry in */.pyenv/shims) ;; *) path="$path:$entry" ;; esac
done
other_versions=()
missing_versions=()
for version in $OTHER_PYTHONS; do
  dir=""
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}/versions/$version".*/bin; do
    [ -x "$candidate/python$version" ] && dir=$candidate
  done
  if [ -z "$dir" ] && found=$(PATH=$path command -v "python$version"); then dir=$(dirname "$found"); fi
  if [ -n "$dir" ]; then
    path="$path:$dir"
    other_versions+=("$version")
  else
    missing_versions+=("$version")
  fi
done
export PATH=$path
test_sanity() { "$BIN/ansible-test" sanity --local --color no "$@"; }
start=$(date +%s)

echo "== ansible-test sanity, every test (Python $PYTHON_VERSION)"
# Every test on every file but pylint; pylint (Ansible's rules for Ansible code) on plugins/ only:
# src/ is the proxy, an application for Python >= 3.11 that runs on the GPU host, not Ansible code,
# linted by ruff and mypy --strict (scripts/test.sh).
test_sanity --python "$PYTHON_VERSION" --skip-test pylint
test_sanity --python "$PYTHON_VERSION" --test pylint plugins/

# Modules run on managed hosts with their own python3 (tests/config.yml: python_requires): compile and
# import them with every other supported Python installed here.
for version in "${other_versions[@]}"; do
  echo "== ansible-test sanity, compile and import (Python $version)"
  test_sanity --python "$version" --test compile --test import
done
if [ ${#missing_versions[@]} -gt 0 ]; then
  echo "NOTE: not installed here, so not checked: Python ${missing_versions[*]} (compile, import)" >&2
fi
echo "sanity passed in $(($(date +%s) - start)) s"
