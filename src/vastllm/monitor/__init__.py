"""The on-host monitor of a vastllm GPU host (``vastllm-monitor``).

Every interval it checks Ollama, Redis and the proxy (and, more slowly, a real one-token
generation), records disk, memory and GPU figures as one JSON line under the state directory,
restarts a component that stays unhealthy through the configured service-manager command, and
stops an idle vast.ai instance with the instance-scoped credential. ``vastllm-monitor report``
computes uptime from the records. See docs/monitor.md.
"""
