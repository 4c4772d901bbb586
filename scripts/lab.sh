#!/usr/bin/env bash
# The main job on the embedded default: site.yml on the local lab host, a Docker container standing in for
# a vast.ai instance (root, no systemd, /workspace, SSH). Ollama there is the vastllm lab double.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. .venv/bin/activate
export VASTLLM_REPO=$PWD
vastllm-lab host up
ansible-playbook -i inventory/lab.yml playbooks/lab.yml "$@"
key=$(docker exec vastllm-lab cat /etc/vastllm/proxy-api-key)
cat <<TXT

The lab host serves the model through the vastllm proxy on http://127.0.0.1:8000. Point Claude Code at it:
  export ANTHROPIC_BASE_URL=http://127.0.0.1:8000
  export ANTHROPIC_AUTH_TOKEN=\$(docker exec vastllm-lab cat /etc/vastllm/proxy-api-key)
  claude
Health: curl -s http://127.0.0.1:8000/health
TXT
curl -s -H "x-api-key: $key" -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \
  http://127.0.0.1:8000/v1/messages \
  -d '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Write hello world in Python"}]}'
echo
