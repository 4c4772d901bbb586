"""Lab doubles (emulators) of Ollama and the vast.ai API, and the local lab host.

For tests and the local lab only: never used unless asked for.
"""
