"""`vastllm-lab`: the lab doubles and the local lab host.

Every sub-command here is a test/lab tool, never a stand-in for the real thing:
  vastllm-lab ollama ...   the Ollama REST API emulator and its release-like archive
  vastllm-lab vastai ...   the vast.ai REST API emulator
  vastllm-lab host ...     the local lab host: a Docker container standing in for a vast.ai host
"""

from __future__ import annotations

import importlib
import sys

_COMMANDS = {
    "ollama": "vastllm_lab.ollama.cli",
    "vastai": "vastllm_lab.vastai.cli",
    "host": "vastllm_lab.host",
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in _COMMANDS:
        sys.stderr.write(__doc__ or "")
        return 2
    module = importlib.import_module(_COMMANDS[args[0]])
    result: int = module.main(args[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())
