"""vastllm: a private coding LLM on rented vast.ai GPUs."""

__version__ = "0.1.0"
