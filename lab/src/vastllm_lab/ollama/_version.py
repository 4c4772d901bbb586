"""The Ollama version this lab double reports. `build-archive` bakes its --version in here."""

VERSION = "0.34.2"
