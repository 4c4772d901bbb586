"""The ``vastllm`` command: from a vast.ai key to Claude Code in one command.

``vastllm up | status | connect | disconnect | down | diagnose`` drive the collection's playbooks
through ansible-runner, keep an SSH tunnel to the proxy and write Claude Code's environment file.
Pure logic (prices, spend, status rows, tunnel decisions, progress lines) lives apart from I/O:
``pricing``, ``status``, ``tunnel`` (decisions), ``progress``; ``vast`` (HTTP), ``remote`` (SSH),
``runner`` (ansible-runner) and ``commands`` do the I/O. See docs/cli.md.
"""
