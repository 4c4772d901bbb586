"""Shared fixtures: the Ollama lab double (emulator) as a subprocess on a free loopback port.

    def test_x(ollama_emulator):
        ollama_emulator.url                     # a default instance, started on first use
        emu = ollama_emulator(preload=["qwen3:0.6b"], faults={"chunk_delay": 0.01})
        emu.set_faults({"busy": True}); emu.clear_faults(); emu.stats(); emu.restart(); emu.kill()

Every process started here is stopped at the end of the test (or of the session).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from vastllm_lab.ollama.process import LabOllamaProcess


class OllamaEmulatorFactory:
    """Call it to start an emulator; use its attributes to reach a lazily started default one."""

    def __init__(self, base: Path) -> None:
        self._base = base
        self._started: list[LabOllamaProcess] = []
        self._default: LabOllamaProcess | None = None

    def __call__(
        self,
        preload: list[str] | tuple[str, ...] = (),
        faults: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        models_dir: str | Path | None = None,
    ) -> LabOllamaProcess:
        base = self._base / f"ollama-{len(self._started)}"
        base.mkdir(parents=True, exist_ok=True)
        directory = Path(models_dir) if models_dir else base / "models"
        emulator = LabOllamaProcess(
            models_dir=str(directory),
            preload=preload,
            faults=faults,
            env=env,
            log_dir=str(base),
        )
        self._started.append(emulator)
        return emulator.start()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._default is None:
            self._default = self()
        return getattr(self._default, name)

    def close(self) -> None:
        for emulator in self._started:
            emulator.close()


@pytest.fixture
def ollama_emulator(tmp_path: Path) -> Iterator[OllamaEmulatorFactory]:
    """Factory of Ollama lab doubles for one test (each with its own tmp OLLAMA_MODELS)."""
    factory = OllamaEmulatorFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def ollama_emulator_session(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LabOllamaProcess]:
    """One lab double for the whole session, with every catalog model preloaded.

    Shared: a test that sets faults must clear them (`clear_faults()`) before it ends.
    """
    base = tmp_path_factory.mktemp("ollama-session")
    emulator = LabOllamaProcess(
        models_dir=str(base / "models"),
        preload=[
            "qwen3-coder:30b",
            "qwen2.5-coder:7b",
            "qwen2.5-coder:1.5b",
            "llama3.1:8b",
            "qwen3:0.6b",
        ],
    )
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.close()
