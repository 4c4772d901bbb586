# Copyright: vastllm contributors
# Apache-2.0
"""Options shared by everything in vastllm.stack that calls the vast.ai API."""

from __future__ import annotations


class ModuleDocFragment:
    # The connection to the vast.ai API: vastllm.stack.vastai_instance (module) and the
    # vastllm.stack.vastai inventory plugin take these options with the same meaning and defaults.
    DOCUMENTATION = r"""
options:
  api_key:
    description:
      - vast.ai API key. It may come from a vault, e.g. C({{ vault_vast_api_key }}).
      - When unset, the E(VAST_API_KEY) environment variable is used, then the key file of the
        vastai CLI (C($XDG_CONFIG_HOME/vastai/vast_api_key), C(~/.config/vastai/vast_api_key),
        C(~/.vast_api_key)).
      - The key is sent only in the C(Authorization) header; it never appears in results,
        hostvars, caches or error messages.
    type: str
  api_url:
    description:
      - Base URL of the vast.ai API, for example a lab double on C(http://127.0.0.1:PORT).
      - When unset, the E(VAST_URL) environment variable is used.
      - Only C(https://) and C(http://) URLs are accepted.
    type: str
    default: https://console.vast.ai
  validate_certs:
    description: Verify the TLS certificate of O(api_url).
    type: bool
    default: true
  timeout:
    description: Seconds to wait for one API response.
    type: int
    default: 30
  retries:
    description:
      - How many times to retry a call that failed with 429, 502, 503, 504 or a network error.
      - Waits for the server's C(Retry-After) when given, else backs off exponentially.
    type: int
    default: 5
requirements:
  - A vast.ai account and its API key (U(https://cloud.vast.ai/manage-keys/)).
  - Network access from the controller to O(api_url).
seealso:
  - name: vast.ai documentation
    description: The vast.ai API, its instances and offers, and how API keys work.
    link: https://docs.vast.ai/
"""

    # For plugins (not modules), whose options Ansible reads from the environment itself:
    # extends_documentation_fragment: [vastllm.stack.vastai, vastllm.stack.vastai.plugin_env]
    PLUGIN_ENV = r"""
options:
  api_key:
    env:
      - name: VAST_API_KEY
  api_url:
    env:
      - name: VAST_URL
"""
