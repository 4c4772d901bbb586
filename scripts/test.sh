#!/usr/bin/env bash
# Every test: lint, unit and integration tests, the Molecule scenario (inside pytest, as
# tests/molecule/test_molecule.py). Does its own set-up first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. .venv/bin/activate
export VASTLLM_REPO=$PWD ANSIBLE_CONFIG=$PWD/ansible.cfg PATH="$PWD/.cache/npm/node_modules/.bin:$PATH"

echo "== lint"
ruff check .
ruff format --check .
yamllint -s .
ansible-lint --profile production --offline
mypy
./scripts/sanity.sh
echo "== tests"
# The lab host (an SSH-reached container) backs the discovery -> provisioning test over real SSH.
vastllm-lab host up
exec python -m pytest "$@"
