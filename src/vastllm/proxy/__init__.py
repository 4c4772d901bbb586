"""The vastllm proxy: the Anthropic Messages API in front of Ollama, with a Redis cache."""
