"""In-memory state of the vast.ai API emulator: the account's instances, offers and faults.

Pure logic (no sockets): the HTTP layer in ``server.py`` hands each request to
``LabState.handle``, which checks faults and the API key, then lets ``routes.py`` pick the
operation; every operation returns a ``(status, headers, body)`` tuple. A clock is injected so
transitions (``loading`` -> ``running``) are testable without sleeping. Seed data comes from
``fixtures.py``, filters and page tokens from ``query.py``, the create request's ``env`` from
``dockerenv.py``.

Instance-scoped keys: every instance has a ``CONTAINER_API_KEY`` (vast.ai puts it, with
``CONTAINER_ID``, into the container's environment). The emulator accepts it only for that
instance's own ``GET /api/v0/instances/{id}/`` and ``PUT /api/v0/instances/{id}/`` with
``{"state": "stopped"}`` (what an on-host idle auto-stop needs); any other call gets 403, and a
key it does not know 401. Tests read it with ``LabState.scoped_key(id)`` /
``LabState.container_env(id)`` or pin it with ``LabState(scoped_keys={id: key})``.
"""

from __future__ import annotations

import copy
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .dockerenv import EnvError, container_vars, normalize_env, requested_ports
from .fixtures import LAB_IP, generate_offers, make_instance
from .query import (
    OFFER_TYPES,
    compare_keys,
    encode_token,
    filter_error,
    matches,
    order_rows,
    query_offers,
    select_columns,
    sort_key_of,
)
from .routes import route

Response = tuple[int, dict[str, str], Any]


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


def _bearer(header: str | None) -> str:
    if header and header.startswith("Bearer "):
        return header[len("Bearer ") :].strip()
    return ""


def _forbidden(msg: str) -> Response:
    return 403, {}, {"success": False, "error": "forbidden", "msg": msg}


def scoped_call_allowed(instance_id: int, method: str, path: str, body: Any) -> bool:
    """Whether an instance-scoped key of ``instance_id`` may make this call (pure).

    Only the instance's own ``GET /api/v0/instances/{id}/`` and ``PUT`` of exactly
    ``{"state": "stopped"}`` on it.
    """
    parts = [p for p in path.split("/") if p]
    if parts != ["api", "v0", "instances", str(instance_id)]:
        return False
    if method == "GET":
        return True
    return method == "PUT" and body == {"state": "stopped"}


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
        scoped_keys: Mapping[int, str] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.RLock()
        self.api_keys = set(api_keys)
        self.readonly_keys = set(readonly_keys)
        self.instances: dict[int, dict[str, Any]] = {}
        self.offers: dict[int, dict[str, Any]] = {}
        self.loading_delay = loading_delay
        self.ssh_port = ssh_port
        self.clock = clock
        self.wall_clock = wall_clock  # start_date of new rentals (Unix seconds)
        self._pinned_keys = {int(k): str(v) for k, v in (scoped_keys or {}).items()}
        self.scoped_keys: dict[int, str] = {}  # instance id -> its CONTAINER_API_KEY
        self.stopped_by: dict[int, str] = {}  # instance id -> "account" | "container" (last stop)
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
            self._issue_scoped_key(int(base["id"]))
        return base

    def _issue_scoped_key(self, instance_id: int) -> str:
        key = self._pinned_keys.get(instance_id) or self.scoped_keys.get(instance_id)
        if key is None:
            key = "lab-container-" + secrets.token_hex(16)
        self.scoped_keys[instance_id] = key
        return key

    def scoped_key(self, instance_id: int) -> str:
        """The instance's ``CONTAINER_API_KEY`` (KeyError for an unknown instance)."""
        with self._lock:
            if instance_id not in self.instances:
                raise KeyError(instance_id)
            return self.scoped_keys[instance_id]

    def container_env(self, instance_id: int) -> dict[str, str]:
        """The environment vast.ai gives the instance's container (PID 1): the request's
        variables, ``CONTAINER_ID`` and ``CONTAINER_API_KEY``."""
        with self._lock:
            row = self.instances[instance_id]
            env = {str(k): str(v) for k, v in row.get("extra_env") or []}
            env["CONTAINER_ID"] = str(instance_id)
            env["CONTAINER_API_KEY"] = self.scoped_keys[instance_id]
            return env

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
        token = _bearer(header)
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
            denied = self._authorize_request(method, path, body, auth_header)
            if denied is not None:
                return denied
            self._tick()
            result = route(self, method, path, query, body)
            return self._fault_response(fault) if fault is not None else result

    def _authorize_request(
        self, method: str, path: str, body: Any, header: str | None
    ) -> Response | None:
        token = _bearer(header)
        if token and token not in self.api_keys and token not in self.readonly_keys:
            for instance_id, key in self.scoped_keys.items():
                if secrets.compare_digest(key, token) and instance_id in self.instances:
                    if scoped_call_allowed(instance_id, method, path, body):
                        self._scoped_caller = instance_id
                        return None
                    return _forbidden(
                        f"this key is scoped to instance {instance_id}: it may only read it "
                        "and stop it"
                    )
        self._scoped_caller = None
        return self.authorize(header, write=method != "GET")

    _scoped_caller: int | None = None

    @staticmethod
    def _fault_response(fault: Fault) -> Response:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
        payload = fault.body or {
            "success": False,
            "error": f"lab_fault_{fault.status}",
            "msg": "injected by the lab",
        }
        return fault.status, headers, payload

    # -- operations (picked by routes.route) --------------------------------------------

    def instance_columns(self) -> set[str]:
        """Every column an instance row can have (for ``order_by`` validation)."""
        cols = set(make_instance(0))
        for row in self.instances.values():
            cols.update(k for k in row if not k.startswith("_"))
        return cols

    def list_instances(
        self,
        limit: int,
        filters: Mapping[str, Any],
        after: int,
        order: list[tuple[str, bool]] | None = None,
        cols: list[str] | None = None,
        after_key: list[Any] | None = None,
    ) -> Response:
        """One page of at most ``limit`` instances after the token's row, in ``order``.

        Keyset pagination: the token holds the last row's sort key (``after_key``; for the
        default order by id the id alone). ``cols`` restricts the columns (None: all).
        """
        keys = order or [("id", False)]
        rows = order_rows((r for r in self.instances.values() if matches(r, filters)), keys)
        descending = [desc for _, desc in keys]
        start = (
            after_key if after_key is not None else ([after] if keys == [("id", False)] else None)
        )
        if start is not None and after >= 0:
            remaining = [
                r for r in rows if compare_keys(sort_key_of(r, keys), start, descending) > 0
            ]
        elif after >= 0:
            remaining = [r for r in rows if int(r["id"]) > after]
        else:
            remaining = list(rows)
        page = remaining[:limit]
        next_token = None
        if len(remaining) > limit:
            last = page[-1]
            key = sort_key_of(last, keys) if keys != [("id", False)] else None
            next_token = encode_token(int(last["id"]), key)
        labels: dict[str, int] = {}
        for row in rows:
            name = str(row.get("label") or "")
            labels[name] = labels.get(name, 0) + 1
        return (
            200,
            {},
            {
                "success": True,
                "instances": [select_columns(self._public(r), cols) for r in page],
                "instances_found": len(page),
                "next_token": next_token,
                "total_instances": len(rows),
                "label_counts": labels,
            },
        )

    def current_user(self) -> Response:
        """``GET /api/v0/users/current``: the account (the ``vastai`` CLI asks it once, for the
        role it caches; ``host_agreement_accepted`` false means a client account)."""
        return (
            200,
            {},
            {
                "id": 424242,
                "username": "lab",
                "email": "lab@lab.invalid",
                "credit": 100.0,
                "balance": 0.0,
                "host_agreement_accepted": False,
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
            self.stopped_by[instance_id] = (
                "container" if self._scoped_caller == instance_id else "account"
            )
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
        self.scoped_keys.pop(instance_id, None)
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
        offer_type = q.get("type", "on-demand")
        if offer_type not in OFFER_TYPES:
            msg = f"unknown offer type {offer_type!r} (on-demand, bid, reserved)"
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
            # As documented (404 "Offer not found or not available"); the 410 that the API gives
            # with cancel_unavail when the machine cannot start is a fault switch (docs).
            return (
                404,
                {},
                {
                    "success": False,
                    "error": "invalid_args",
                    "msg": f"error 404/3603: no_such_ask Instance type by id {offer_id} is not "
                    "available.",
                    "ask_id": offer_id,
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
        try:
            env = normalize_env(body.get("env"))
        except EnvError as err:
            return 400, {}, {"success": False, "error": "invalid_args", "msg": str(err)}
        instance_id = next(self._ids)
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
            start_date=self.wall_clock(),
            storage_cost=float(offer.get("storage_cost", 0.15)),
            inet_up_cost=float(offer.get("inet_up_cost", 0.002)),
            inet_down_cost=float(offer.get("inet_down_cost", 0.002)),
        )
        row["actual_status"] = "loading"
        row["status_msg"] = "pulling image"
        row["onstart"] = body.get("onstart") or ""
        row["extra_env"] = container_vars(env)
        row["_requested_ports"] = requested_ports(env)
        self.instances[instance_id] = row
        self._issue_scoped_key(instance_id)
        offer["rented"] = True
        self._ready_at[instance_id] = self.clock() + self.loading_delay
        return 200, {}, {"success": True, "new_contract": instance_id}
