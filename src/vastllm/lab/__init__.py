"""Lab doubles (emulators) of Ollama and the vast.ai API, for tests and the local lab. Never used unless asked for."""
