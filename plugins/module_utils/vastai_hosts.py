# Copyright: vastllm contributors
# Apache-2.0
"""A vast.ai instance (as the API returns it) -> an Ansible host: name, SSH, hostvars, filters.

Pure functions, no I/O: shared by the ``vastai`` inventory plugin and the ``vastai_instance``
module (whose result has the same hostvars as the inventory). The HTTP client is in
``vastai_api``. Annotations only use new syntax under ``from __future__ import annotations``,
so this imports on Python 3.8.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_PREFIX = "vastai_"
CONNECT_MODES = ("auto", "direct", "proxy")


def instance_status(instance: Mapping[str, Any]) -> str:
    """The instance's actual status (``loading`` when the API has none yet)."""
    status = instance.get("actual_status")
    return str(status) if status else "loading"


def direct_ssh(instance: Mapping[str, Any]) -> tuple[str, int] | None:
    """(public IP, host port mapped to 22/tcp) when the instance has a direct SSH mapping."""
    ports = instance.get("ports") or {}
    if not isinstance(ports, Mapping):
        return None
    mappings = ports.get("22/tcp") or []
    ip = str(instance.get("public_ipaddr") or "").strip()
    if not ip or not mappings:
        return None
    for mapping in mappings:
        try:
            port = int(str(mapping.get("HostPort", "")).strip())
        except (AttributeError, ValueError):
            continue
        if 0 < port < 65536:
            return ip, port
    return None


def proxy_ssh(instance: Mapping[str, Any]) -> tuple[str, int] | None:
    """(ssh_host, ssh_port) through vast.ai's SSH proxy.

    Jupyter images listen one port above the advertised ``ssh_port`` on the proxy.
    """
    host = str(instance.get("ssh_host") or "").strip()
    try:
        port = int(instance.get("ssh_port") or 0)
    except (TypeError, ValueError):
        return None
    if not host or port <= 0:
        return None
    if "jupyter" in str(instance.get("image_runtype") or ""):
        port += 1
    return host, port


def ssh_endpoint(
    instance: Mapping[str, Any], connect_with: str = "auto"
) -> tuple[str | None, int | None, str | None]:
    """(host, port, mode) for SSH; mode is ``direct``/``proxy`` or None when unreachable."""
    if connect_with not in CONNECT_MODES:
        raise ValueError(f"connect_with must be one of {', '.join(CONNECT_MODES)}")
    if connect_with in ("auto", "direct"):
        found = direct_ssh(instance)
        if found:
            return found[0], found[1], "direct"
        if connect_with == "direct":
            return None, None, None
    found = proxy_ssh(instance)
    if found:
        return found[0], found[1], "proxy"
    return None, None, None


# API field -> hostvar suffix. Values are copied as the API returns them.
HOSTVAR_FIELDS = (
    ("id", "id"),
    ("label", "label"),
    ("intended_status", "intended_status"),
    ("cur_state", "cur_state"),
    ("gpu_name", "gpu_name"),
    ("num_gpus", "num_gpus"),
    ("gpu_ram", "gpu_ram"),
    ("cpu_ram", "cpu_ram"),
    ("cpu_cores_effective", "cpu_cores"),
    ("disk_space", "disk_space"),
    ("public_ipaddr", "public_ipaddr"),
    ("ssh_host", "ssh_host"),
    ("ssh_port", "ssh_port"),
    ("dph_total", "dph_total"),
    ("geolocation", "geolocation"),
    ("image_uuid", "image"),
    ("image_runtype", "image_runtype"),
    ("machine_id", "machine_id"),
    ("reliability2", "reliability"),
    ("start_date", "start_date"),
)


def instance_hostvars(
    instance: Mapping[str, Any], prefix: str = DEFAULT_PREFIX, connect_with: str = "auto"
) -> dict[str, Any]:
    """Hostvars for one API instance: connection vars plus ``prefix``-ed facts."""
    host, port, mode = ssh_endpoint(instance, connect_with)
    result: dict[str, Any] = {"ansible_user": "root"}
    if host is not None:
        result["ansible_host"] = host
        result["ansible_port"] = port
    for field, name in HOSTVAR_FIELDS:
        result[prefix + name] = instance.get(field)
    result[prefix + "status"] = instance_status(instance)
    ports = instance.get("ports")
    result[prefix + "ports"] = dict(ports) if isinstance(ports, Mapping) else {}
    result[prefix + "connect_with"] = mode
    return result


def default_hostname(instance: Mapping[str, Any]) -> str:
    """The inventory's default host name: the label when it is set, else the instance id."""
    label = str(instance.get("label") or "").strip()
    return label if label else str(instance.get("id"))


def _matches_any(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def instance_matches(
    instance: Mapping[str, Any],
    statuses: Iterable[str] | None = None,
    labels: Iterable[str] | None = None,
    gpu_names: Iterable[str] | None = None,
) -> bool:
    """Client-side filters: status in ``statuses``, label/gpu matching any glob.

    Empty or None filter lists match everything.
    """
    status_list = [s.lower() for s in statuses or []]
    if status_list and instance_status(instance).lower() not in status_list:
        return False
    label_list = list(labels or [])
    if label_list and not _matches_any(str(instance.get("label") or ""), label_list):
        return False
    gpu_list = list(gpu_names or [])
    if gpu_list:
        gpu = str(instance.get("gpu_name") or "")
        # Users write RTX_4090 like the vastai CLI does; the API says "RTX 4090".
        normalized = [g.replace("_", " ") for g in gpu_list]
        if not _matches_any(gpu, normalized) and not _matches_any(gpu, gpu_list):
            return False
    return True
