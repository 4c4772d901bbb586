"""Emulator of the vast.ai REST API (loopback only) for tests and the local lab."""
