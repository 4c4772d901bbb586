"""Model name normalization, like Ollama's."""

import pytest

from vastllm_lab.ollama.names import InvalidModelName, normalize, parse_name


@pytest.mark.parametrize(
    ("raw", "display"),
    [
        ("qwen3", "qwen3:latest"),
        ("qwen3:0.6b", "qwen3:0.6b"),
        ("library/qwen3:0.6b", "qwen3:0.6b"),
        ("registry.ollama.ai/library/qwen3:0.6b", "qwen3:0.6b"),
        ("  Qwen3-Coder:30B ", "qwen3-coder:30b"),
        ("user/model", "user/model:latest"),
        ("localhost:5000/team/model:v1", "localhost:5000/team/model:v1"),
        ("qwen3:0.6b@sha256:" + "a" * 64, "qwen3:0.6b"),
    ],
)
def test_normalize(raw, display):
    assert normalize(raw) == display


def test_full_name_has_registry_and_namespace():
    assert parse_name("qwen3").full == "registry.ollama.ai/library/qwen3:latest"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (None, "must be a string"),
        ("a/b/c/d", "too many"),
        ("bad name", "invalid model"),
        ("model:bad tag", "invalid tag"),
        ("-model", "invalid model"),
        ("model:", "invalid tag"),
    ],
)
def test_invalid_names_say_why(raw, fragment):
    with pytest.raises(InvalidModelName, match=fragment):
        parse_name(raw)
