"""vastllm LAB DOUBLE of Ollama: an emulator of Ollama's REST API for tests and the local lab.

It is not Ollama and runs no model: the catalog, pulls and generated text are all emulated
(deterministically). It is only ever used when asked for (`vastllm-lab ollama serve`, or the
`bin/ollama` of an archive built with `vastllm-lab ollama build-archive`).

Standard library only and Python >= 3.9 compatible: it runs on managed hosts that only have python3.
"""

from ._version import VERSION

__all__ = ["VERSION"]
