"""In-memory state of the vast.ai API emulator: instances, offers, pagination, faults.

Pure logic (no sockets): the HTTP layer in ``server.py`` is a thin translation of requests
into calls on ``LabState``, which returns ``(status, headers, body)`` tuples. A clock is
injected so transitions (``loading`` -> ``running``) are testable without sleeping.

Every address the emulator hands out is loopback (127.0.0.1) or an ``.invalid`` name, so a
client that connects to what it reads never leaves the machine.
"""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Response = tuple[int, dict[str, str], Any]

PAGE_LIMIT_MAX = 25
LAB_IP = "127.0.0.1"

GPU_CATALOG: tuple[tuple[str, int, float], ...] = (
    # name, gpu_ram (MB, as the API reports), base $/h per GPU
    ("RTX 3090", 24576, 0.18),
    ("RTX 4090", 24564, 0.35),
    ("RTX A6000", 49140, 0.45),
    ("A100 SXM4", 81920, 1.10),
    ("H100 SXM", 81559, 2.20),
    ("L40S", 46068, 0.70),
)
REGIONS = (
    "Texas, US",
    "Quebec, CA",
    "Oregon, US",
    "Norway, NO",
    "Bavaria, DE",
    "Taiwan, TW",
)


def _no_such_instance(instance_id: int | None) -> Response:
    """The API's answer for an instance id it does not know."""
    return (
        404,
        {},
        {"success": False, "error": "no_such_instance", "msg": f"instance {instance_id} not found"},
    )


@dataclass
class Fault:
    """Answer the next ``count`` requests whose path starts with ``path_prefix`` with ``status``."""

    status: int
    count: int = 1
    path_prefix: str = "/"
    retry_after: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    after: bool = False  # process the request first, then answer with the fault (lost reply)


def encode_token(after_id: int) -> str:
    raw = json.dumps({"after": after_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> int | None:
    """The id a page token continues after, or None when the token is malformed."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return int(data["after"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
    "in": lambda a, b: isinstance(b, list) and a in b,
    "notin": lambda a, b: isinstance(b, list) and a not in b,
    "nin": lambda a, b: isinstance(b, list) and a not in b,
    "gt": lambda a, b: a is not None and a > b,
    "gte": lambda a, b: a is not None and a >= b,
    "lt": lambda a, b: a is not None and a < b,
    "lte": lambda a, b: a is not None and a <= b,
}


def filter_error(filters: Any) -> str | None:
    """Why a ``select_filters``/``q`` object is invalid, or None when it is fine."""
    if not isinstance(filters, dict):
        return "filters must be a JSON object"
    for name, cond in filters.items():
        if not isinstance(cond, dict):
            return f"filter on {name!r} must be an object like {{'eq': value}}"
        for op in cond:
            if op not in _OPS:
                return f"unknown operator {op!r} on {name!r}"
    return None


def matches(row: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
    """Whether ``row`` satisfies every ``{field: {op: value}}`` condition."""
    for name, cond in filters.items():
        value = row.get(name)
        for op, expected in cond.items():
            try:
                if not _OPS[op](value, expected):
                    return False
            except TypeError:
                return False
    return True


def make_instance(
    instance_id: int,
    *,
    label: str | None = None,
    gpu_name: str = "RTX 4090",
    gpu_ram: int = 24564,
    num_gpus: int = 1,
    status: str = "running",
    dph_total: float = 0.35,
    geolocation: str = "Texas, US",
    machine_id: int | None = None,
    image: str = "vastai/base-image:cuda-12.4-ubuntu22.04",
    ssh_port: int | None = None,
    direct_port: int | None = None,
    disk_space: float = 64.0,
    extra_ports: Mapping[str, str] | None = None,
    image_runtype: str = "ssh_direc ssh_proxy",
    start_date: float = 1_732_000_000.0,
) -> dict[str, Any]:
    """A realistic instance object, shaped like the API returns it.

    ``ports`` is only present (non-empty) once the instance is running; ``HostPort`` is a
    string, as in the real API.
    """
    proxy_port = ssh_port if ssh_port is not None else 20000 + (instance_id % 40000)
    running = status == "running"
    ports: dict[str, list[dict[str, str]]] = {}
    if running:
        host_port = direct_port if direct_port is not None else 40000 + (instance_id % 20000)
        ports["22/tcp"] = [{"HostIp": "0.0.0.0", "HostPort": str(host_port)}]
        for container, hp in (extra_ports or {}).items():
            ports[container] = [{"HostIp": "0.0.0.0", "HostPort": str(hp)}]
    intended = "stopped" if status in ("exited", "stopped") else "running"
    return {
        "id": instance_id,
        "label": label,
        "actual_status": status,
        "intended_status": intended,
        "cur_state": "stopped" if intended == "stopped" else "running",
        "next_state": "stopped" if intended == "stopped" else "running",
        "status_msg": "success, running" if running else "",
        "gpu_name": gpu_name,
        "num_gpus": num_gpus,
        "gpu_ram": gpu_ram,
        "gpu_totalram": gpu_ram * num_gpus,
        "gpu_util": 0.0,
        "cpu_name": "AMD EPYC 7543 32-Core Processor",
        "cpu_cores": 64,
        "cpu_cores_effective": 16.0,
        "cpu_ram": 128905,
        "disk_space": disk_space,
        "disk_util": 1.2,
        "public_ipaddr": LAB_IP,
        "ssh_host": f"ssh{instance_id % 9 + 1}.lab.invalid",
        "ssh_port": proxy_port,
        "ssh_idx": str(instance_id % 9 + 1),
        "ports": ports,
        "direct_port_start": 40000,
        "direct_port_end": 40100,
        "machine_id": machine_id if machine_id is not None else 10000 + instance_id,
        "host_id": 5000 + instance_id % 100,
        "dph_total": dph_total,
        "dph_base": round(dph_total * 0.9, 4),
        "geolocation": geolocation,
        "image_uuid": image,
        "image_runtype": image_runtype,
        "image_args": [],
        "extra_env": [],
        "onstart": "",
        "reliability2": 0.995,
        "verification": "verified",
        "inet_up": 850.0,
        "inet_down": 920.0,
        "start_date": start_date,
        "end_date": None,
        "duration": None,
        "template_id": None,
        "jupyter_token": None,
    }


def generate_instances(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` varied running instances (a few stopped/loading ones among them)."""
    rng = random.Random(seed)  # noqa: S311 - deterministic lab data, not crypto
    rows = []
    for n in range(count):
        instance_id = 9_000_000 + n
        gpu, ram, price = GPU_CATALOG[n % len(GPU_CATALOG)]
        num = rng.choice((1, 1, 2, 4))
        status = "running"
        if n % 50 == 7:
            status = "exited"
        elif n % 50 == 9:
            status = "loading"
        label = f"lab-{n:04d}" if n % 10 else None
        rows.append(
            make_instance(
                instance_id,
                label=label,
                gpu_name=gpu,
                gpu_ram=ram,
                num_gpus=num,
                status=status,
                dph_total=round(price * num * rng.uniform(0.9, 1.3), 4),
                geolocation=REGIONS[n % len(REGIONS)],
            )
        )
    return rows


def generate_offers(count: int = 120, seed: int = 11) -> list[dict[str, Any]]:
    """A market of offers covering every GPU in the catalog, several regions and prices."""
    rng = random.Random(seed)  # noqa: S311 - deterministic lab data, not crypto
    offers = []
    for n in range(count):
        gpu, ram, price = GPU_CATALOG[n % len(GPU_CATALOG)]
        num = rng.choice((1, 1, 1, 2, 4, 8))
        dph = round(price * num * rng.uniform(0.85, 1.6), 4)
        reliability = round(rng.uniform(0.93, 0.9995), 4)
        verified = rng.random() > 0.2
        offers.append(
            {
                "id": 30_000_000 + n,
                "ask_contract_id": 30_000_000 + n,
                "machine_id": 20_000 + n,
                "host_id": 6000 + n,
                "gpu_name": gpu,
                "num_gpus": num,
                "gpu_ram": ram,
                "gpu_total_ram": ram * num,
                "cpu_ram": 64000 * num,
                "cpu_cores_effective": 8.0 * num,
                "disk_space": float(rng.choice((100, 250, 500, 1000))),
                "dph_total": dph,
                "dph_base": round(dph * 0.9, 4),
                "reliability2": reliability,
                "reliability": reliability,
                "verification": "verified" if verified else "unverified",
                "verified": verified,
                "geolocation": REGIONS[rng.randrange(len(REGIONS))],
                "inet_down": float(rng.choice((200, 500, 1000))),
                "inet_up": float(rng.choice((100, 500, 900))),
                "rentable": True,
                "rented": False,
                "external": False,
                "direct_port_count": 100,
                "cuda_max_good": 12.4,
                "score": round(rng.uniform(50, 500), 2),
            }
        )
    return offers


def _sort_key(name: str) -> Callable[[Mapping[str, Any]], tuple[bool, Any]]:
    def key(offer: Mapping[str, Any]) -> tuple[bool, Any]:
        value = offer.get(name)
        return (value is None, value if value is not None else 0)

    return key


def _region_code(geolocation: str) -> str:
    return geolocation.rsplit(",", 1)[-1].strip() if geolocation else ""


def query_offers(offers: Iterable[Mapping[str, Any]], q: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Apply a vast.ai search query (``{field: {op: value}}`` + order/limit) to offers."""
    conditions = {
        k: v
        for k, v in q.items()
        if k not in ("order", "limit", "type", "allocated_storage", "disable_bundling")
    }
    result = []
    for offer in offers:
        row = dict(offer)
        row["geolocation_code"] = _region_code(str(offer.get("geolocation") or ""))
        if matches(row, conditions):
            result.append(dict(offer))
    for name, direction in reversed(q.get("order") or []):
        result.sort(key=_sort_key(str(name)), reverse=direction == "desc")
    limit = q.get("limit")
    if isinstance(limit, int) and limit > 0:
        result = result[:limit]
    storage = q.get("allocated_storage")
    if isinstance(storage, int | float):
        for offer in result:
            offer["allocated_storage"] = storage
    return result


def _env_ports(env: Mapping[str, Any]) -> list[str]:
    """Container ports requested as ``{"-p 8000:8000": "1"}`` env entries."""
    ports = []
    for key in env:
        if isinstance(key, str) and key.startswith("-p "):
            spec = key[3:].strip()
            container = spec.split(":")[-1]
            if "/" not in container:
                container += "/tcp"
            ports.append(container)
    return ports


class LabState:
    """The emulated account: thread-safe, clock-injected."""

    def __init__(
        self,
        *,
        api_keys: Iterable[str] = ("lab-key",),
        readonly_keys: Iterable[str] = (),
        instances: Iterable[Mapping[str, Any]] = (),
        offers: Iterable[Mapping[str, Any]] | None = None,
        loading_delay: float = 2.0,
        ssh_port: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.RLock()
        self.api_keys = set(api_keys)
        self.readonly_keys = set(readonly_keys)
        self.instances: dict[int, dict[str, Any]] = {}
        self.offers: dict[int, dict[str, Any]] = {}
        self.loading_delay = loading_delay
        self.ssh_port = ssh_port
        self.clock = clock
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.ssh_keys: dict[int, list[str]] = {}
        self._ready_at: dict[int, float] = {}
        self._ids = itertools.count(40_000_000)
        self._ports = itertools.count(41000)
        for row in instances:
            self.add_instance(row)
        for offer in generate_offers() if offers is None else offers:
            self.offers[int(offer["id"])] = dict(offer)

    # -- setup ------------------------------------------------------------------------

    def add_instance(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Add a seed instance; missing fields are filled with realistic defaults."""
        if "id" not in row:
            raise ValueError("a seed instance needs an 'id'")
        base = make_instance(int(row["id"]), status=str(row.get("actual_status") or "running"))
        base.update(copy.deepcopy(dict(row)))
        if base.get("actual_status") != "running":
            base["ports"] = {}
        with self._lock:
            self.instances[int(base["id"])] = base
        return base

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    # -- helpers ----------------------------------------------------------------------

    def _tick(self) -> None:
        """Complete transitions whose time has come (loading -> running)."""
        now = self.clock()
        for instance_id, ready_at in list(self._ready_at.items()):
            if now >= ready_at:
                del self._ready_at[instance_id]
                row = self.instances.get(instance_id)
                if row is not None and row.get("intended_status") == "running":
                    self._become_running(row)

    def _become_running(self, row: dict[str, Any]) -> None:
        ports: dict[str, list[dict[str, str]]] = {}
        ssh_port = self.ssh_port if self.ssh_port is not None else next(self._ports)
        ports["22/tcp"] = [{"HostIp": "0.0.0.0", "HostPort": str(ssh_port)}]
        for container in row.get("_requested_ports", []):
            ports[container] = [{"HostIp": "0.0.0.0", "HostPort": str(next(self._ports))}]
        row["ports"] = ports
        row["actual_status"] = "running"
        row["cur_state"] = "running"
        row["status_msg"] = "success, running"
        if self.ssh_port is not None:
            row["ssh_host"] = LAB_IP
            row["ssh_port"] = self.ssh_port

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if path.startswith(fault.path_prefix) and fault.count > 0:
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _public(row: Mapping[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in row.items() if not k.startswith("_")}

    # -- request entry point ------------------------------------------------------------

    def authorize(self, header: str | None, write: bool) -> Response | None:
        """401 without a known key, 403 for a read-only key on a write call."""
        token = ""
        if header and header.startswith("Bearer "):
            token = header[len("Bearer ") :].strip()
        if token in self.readonly_keys:
            if write:
                return (
                    403,
                    {},
                    {"success": False, "error": "forbidden", "msg": "this API key is read-only"},
                )
            return None
        if token not in self.api_keys:
            return (
                401,
                {},
                {"success": False, "error": "invalid_user", "msg": "Invalid or missing API key"},
            )
        return None

    def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        body: Any,
        auth_header: str | None,
    ) -> Response:
        """Dispatch one API request."""
        with self._lock:
            self.requests.append((method, path))
            fault = self._take_fault(path)
            if fault is not None and not fault.after:
                return self._fault_response(fault)
            denied = self.authorize(auth_header, write=method != "GET")
            if denied is not None:
                return denied
            self._tick()
            result = self._route(method, path, query, body)
            return self._fault_response(fault) if fault is not None else result

    @staticmethod
    def _fault_response(fault: Fault) -> Response:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
        payload = fault.body or {
            "success": False,
            "error": f"lab_fault_{fault.status}",
            "msg": "injected by the lab",
        }
        return fault.status, headers, payload

    def _route(self, method: str, path: str, query: Mapping[str, str], body: Any) -> Response:
        parts = [p for p in path.split("/") if p]
        if parts[:3] == ["api", "v1", "instances"] and len(parts) == 3 and method == "GET":
            return self.list_v1(query)
        if parts[:2] != ["api", "v0"]:
            return 404, {}, {"success": False, "error": "not_found", "msg": f"no route {path}"}
        rest = parts[2:]
        if rest == ["instances"] and method == "GET":
            return (
                410,
                {},
                {
                    "success": False,
                    "error": "gone",
                    "msg": "the v0 instance list is gone; use /api/v1/instances/",
                },
            )
        if len(rest) == 2 and rest[0] == "instances":
            instance_id = _int(rest[1])
            if instance_id is None:
                return 400, {}, {"success": False, "error": "invalid_args", "msg": "bad id"}
            if method == "GET":
                return self.get_instance(instance_id)
            if method == "PUT":
                return self.update_instance(instance_id, body)
            if method == "DELETE":
                return self.destroy_instance(instance_id)
        if len(rest) == 3 and rest[0] == "instances" and rest[2] == "ssh" and method == "POST":
            return self.attach_ssh(_int(rest[1]), body)
        if rest == ["bundles"] and method in ("POST", "GET"):
            q = body if method == "POST" else _json_param(query.get("q"), {})
            return self.search(q)
        if rest == ["search", "asks"] and method == "PUT":
            q = body.get("q", {}) if isinstance(body, dict) else {}
            return self.search(q)
        if len(rest) == 2 and rest[0] == "asks" and method == "PUT":
            return self.create(_int(rest[1]), body)
        return 404, {}, {"success": False, "error": "not_found", "msg": f"no route {method} {path}"}

    # -- endpoints ----------------------------------------------------------------------

    def list_v1(self, query: Mapping[str, str]) -> Response:
        try:
            limit = int(query.get("limit", str(PAGE_LIMIT_MAX)))
        except ValueError:
            return 400, {}, {"success": False, "error": "invalid_args", "msg": "bad limit"}
        limit = max(1, min(limit, PAGE_LIMIT_MAX))
        filters = _json_param(query.get("select_filters"), {})
        problem = filter_error(filters)
        if problem:
            return 400, {}, {"success": False, "error": "invalid_args", "msg": problem}
        token = query.get("after_token") or query.get("next_token")
        after = -1
        if token:
            decoded = decode_token(token)
            if decoded is None:
                return (
                    400,
                    {},
                    {"success": False, "error": "invalid_args", "msg": "bad pagination token"},
                )
            after = decoded
        rows = [r for _, r in sorted(self.instances.items()) if matches(r, filters)]
        remaining = [r for r in rows if int(r["id"]) > after]
        page = remaining[:limit]
        next_token = encode_token(int(page[-1]["id"])) if len(remaining) > limit else None
        return (
            200,
            {},
            {
                "instances": [self._public(r) for r in page],
                "next_token": next_token,
                "total_instances": len(rows),
            },
        )

    def get_instance(self, instance_id: int) -> Response:
        row = self.instances.get(instance_id)
        if row is None:
            return _no_such_instance(instance_id)
        return 200, {}, {"instances": self._public(row)}

    def update_instance(self, instance_id: int, body: Any) -> Response:
        row = self.instances.get(instance_id)
        if row is None:
            return _no_such_instance(instance_id)
        if not isinstance(body, dict) or not ({"state", "label"} & body.keys()):
            return (
                400,
                {},
                {"success": False, "error": "invalid_args", "msg": "expected 'state' or 'label'"},
            )
        if "label" in body:
            row["label"] = body["label"]
        state = body.get("state")
        if state == "stopped":
            row.update(
                intended_status="stopped",
                cur_state="stopped",
                next_state="stopped",
                actual_status="exited",
                ports={},
                status_msg="stopped",
            )
            self._ready_at.pop(instance_id, None)
        elif state == "running":
            if row.get("actual_status") != "running":
                row.update(
                    intended_status="running",
                    next_state="running",
                    actual_status="loading",
                    status_msg="starting",
                )
                self._ready_at[instance_id] = self.clock() + self.loading_delay
        elif state is not None:
            return (
                400,
                {},
                {"success": False, "error": "invalid_args", "msg": f"unknown state {state!r}"},
            )
        return 200, {}, {"success": True}

    def destroy_instance(self, instance_id: int) -> Response:
        if self.instances.pop(instance_id, None) is None:
            return _no_such_instance(instance_id)
        self._ready_at.pop(instance_id, None)
        self.ssh_keys.pop(instance_id, None)
        return 200, {}, {"success": True}

    def attach_ssh(self, instance_id: int | None, body: Any) -> Response:
        if instance_id is None or instance_id not in self.instances:
            return _no_such_instance(instance_id)
        key = body.get("ssh_key") if isinstance(body, dict) else None
        if not isinstance(key, str) or not key.startswith(("ssh-", "ecdsa-", "sk-")):
            return (
                400,
                {},
                {
                    "success": False,
                    "error": "invalid_args",
                    "msg": "ssh_key must be an OpenSSH public key",
                },
            )
        self.ssh_keys.setdefault(instance_id, []).append(key.strip())
        return 200, {}, {"success": True}

    def search(self, q: Any) -> Response:
        if not isinstance(q, dict):
            msg = "q must be an object"
            return 400, {}, {"success": False, "error": "invalid_args", "msg": msg}
        conditions = {
            k: v
            for k, v in q.items()
            if k not in ("order", "limit", "type", "allocated_storage", "disable_bundling")
        }
        problem = filter_error(conditions)
        if problem:
            return 400, {}, {"success": False, "error": "invalid_args", "msg": problem}
        available = [o for o in self.offers.values() if not o.get("rented")]
        return 200, {}, {"offers": query_offers(available, q)}

    def create(self, offer_id: int | None, body: Any) -> Response:
        offer = self.offers.get(offer_id) if offer_id is not None else None
        if offer is None or offer.get("rented"):
            return (
                400,
                {},
                {
                    "success": False,
                    "error": "no_such_ask",
                    "msg": f"offer {offer_id} is not available",
                },
            )
        if not isinstance(body, dict) or not body.get("image"):
            return (
                400,
                {},
                {"success": False, "error": "invalid_args", "msg": "an image is required"},
            )
        price = body.get("price")
        if price is not None and float(price) < float(offer["dph_total"]):
            return (
                400,
                {},
                {"success": False, "error": "price_too_low", "msg": "bid below the offer's price"},
            )
        instance_id = next(self._ids)
        raw_env = body.get("env")
        env: dict[str, Any] = raw_env if isinstance(raw_env, dict) else {}
        row = make_instance(
            instance_id,
            label=body.get("label"),
            gpu_name=str(offer["gpu_name"]),
            gpu_ram=int(offer["gpu_ram"]),
            num_gpus=int(offer["num_gpus"]),
            status="loading",
            dph_total=float(offer["dph_total"]),
            geolocation=str(offer["geolocation"]),
            machine_id=int(offer["machine_id"]),
            image=str(body["image"]),
            disk_space=float(body.get("disk") or 10),
            image_runtype=str(body.get("runtype") or "ssh"),
            start_date=time.time(),
        )
        row["actual_status"] = "loading"
        row["status_msg"] = "pulling image"
        row["onstart"] = body.get("onstart") or ""
        row["extra_env"] = [[k, v] for k, v in env.items() if not str(k).startswith("-")]
        row["_requested_ports"] = _env_ports(env)
        self.instances[instance_id] = row
        offer["rented"] = True
        self._ready_at[instance_id] = self.clock() + self.loading_delay
        return 200, {}, {"success": True, "new_contract": instance_id}


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _json_param(text: str | None, default: Any) -> Any:
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except ValueError:
        return None
