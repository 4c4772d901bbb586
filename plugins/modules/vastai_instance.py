#!/usr/bin/python
# Copyright: vastllm contributors
# Apache-2.0
from __future__ import annotations

DOCUMENTATION = r"""
module: vastai_instance
short_description: Rent, start, stop and destroy a vast.ai instance identified by its label
description:
  - Manages one vast.ai instance per O(label), idempotently.
  - Runs on the controller, in a play on C(localhost) or with C(delegate_to=localhost).
  - Creating an instance rents the cheapest offer that meets every criterion and costs at most
    O(max_dph) per hour, then waits until it is running and SSH answers (bounded by
    O(wait_timeout)).
  - Returns the instance's facts in the same shape as the C(vastai) inventory's hostvars, so a
    play can C(ansible.builtin.add_host) it right away.
  - The API key is never returned or logged.
version_added: "0.1.0"
author:
  - vastllm contributors (@vastllm)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vastllm.stack.vastai
seealso:
  - plugin: vastllm.stack.vastai
    plugin_type: inventory
    description: Lists the instances this module rents as inventory hosts, with the same hostvars.
options:
  label:
    description:
      - The instance's label; the identity this module manages. Must be unique in the account.
    type: str
    required: true
  state:
    description:
      - V(present) - the instance exists (rented and started when missing).
      - V(running) - the instance exists and runs (a stopped one is started).
      - V(stopped) - the existing instance is stopped (fails when there is none).
      - V(absent) - every instance with this label is destroyed.
    type: str
    choices: [present, running, stopped, absent]
    default: present
  max_dph:
    description:
      - Cost guard - the most this instance may cost, in dollars per hour (whole instance).
      - Required only when an instance is rented (V(present) or V(running) and no instance
        carries O(label)); an offer above it is never rented.
      - Starting, stopping or destroying an existing instance does not need it.
    type: float
  gpu_names:
    description:
      - Acceptable GPU models, e.g. V(RTX_4090) or V(RTX 4090); globs like V(A100*) work.
    type: list
    elements: str
    default: []
  num_gpus:
    description: Exact number of GPUs.
    type: int
    default: 1
  min_gpu_ram:
    description: Minimum RAM per GPU in GB.
    type: float
  min_disk:
    description: Minimum free disk of the machine in GB (defaults to O(disk)).
    type: float
  min_reliability:
    description: Minimum machine reliability, between 0 and 1 (e.g. V(0.98)).
    type: float
  verified_only:
    description: Only rent verified machines.
    type: bool
    default: true
  region:
    description:
      - Country code of the machine (V(US), V(DE)), a full geolocation (V(Texas, US)) or a glob.
    type: str
  offer_filters:
    description:
      - Extra vast.ai search filters, one entry per offer field, each a mapping of operator
        (C(eq), C(neq), C(in), C(notin), C(gt), C(gte), C(lt), C(lte)) to value.
    type: dict
    default: {}
  image:
    description:
      - Docker image to run.
      - Required only when an instance is rented (V(present) or V(running) and no instance
        carries O(label)); starting or stopping an existing instance does not need it.
    type: str
  image_login:
    description: Registry login for a private image (C(-u user -p token registry)).
    type: str
  disk:
    description: Disk to allocate in GB.
    type: float
    default: 32
  env:
    description: Environment variables of the container.
    type: dict
    default: {}
  ports:
    description:
      - Container ports to expose, e.g. V([8000]) for the vastllm proxy; V(22) is always exposed.
      - Each becomes a C(-p N:N) mapping; vast.ai picks the public host port.
    type: list
    elements: raw
    default: []
  onstart:
    description: Shell script run when the container starts.
    type: str
  ssh_key:
    description: OpenSSH public key to attach to the new instance.
    type: str
  ssh_direct:
    description: Ask for direct SSH (public IP + mapped port) in addition to the SSH proxy.
    type: bool
    default: true
  connect_with:
    description: How the returned C(ansible_host)/C(ansible_port) reach SSH (as the inventory).
    type: str
    choices: [auto, direct, proxy]
    default: auto
  hostvars_prefix:
    description: Prefix of the returned facts (as the inventory's O(hostvars_prefix)).
    type: str
    default: vastai_
  wait:
    description: Wait until the instance is running (and SSH answers when O(wait_ssh)).
    type: bool
    default: true
  wait_ssh:
    description: Also wait until the SSH endpoint sends its banner.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait in total; the module fails with the last status when exceeded.
    type: int
    default: 600
  poll_interval:
    description: Seconds between status checks while waiting.
    type: float
    default: 5
attributes:
  check_mode:
    support: full
    details: Searches offers and reports what would be rented and at what price; changes nothing.
  diff_mode:
    support: full
    details: Shows the label and status before and after.
  platform:
    support: full
    platforms: posix
notes:
  - Labels are the identity; two instances with the same label make V(present)/V(running)/
    V(stopped) fail (V(absent) destroys them all).
  - vast.ai bills by the second while an instance exists, stopped instances still pay storage.
"""

EXAMPLES = r"""
- name: Rent one RTX 4090 for the proxy, at most $0.60/h
  vastllm.stack.vastai_instance:
    label: vastllm-1
    max_dph: 0.60
    gpu_names: [RTX_4090, RTX_3090]
    min_gpu_ram: 24
    min_reliability: 0.98
    region: US
    image: vastai/base-image:cuda-12.4-ubuntu22.04
    disk: 80
    ports: [8000]
    ssh_key: "{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"
  delegate_to: localhost
  register: rented

- name: Use it right away
  ansible.builtin.add_host:
    name: "{{ rented.hostname }}"
    groups: [vastllm, vastai]
    ansible_host: "{{ rented.hostvars.ansible_host }}"
    ansible_port: "{{ rented.hostvars.ansible_port }}"
    ansible_user: root

- name: Stop it (keeps the disk, still billed for storage)
  vastllm.stack.vastai_instance:
    label: vastllm-1
    state: stopped

- name: Destroy it
  vastllm.stack.vastai_instance:
    label: vastllm-1
    state: absent
"""

RETURN = r"""
changed:
  description: Whether an instance was rented, started, stopped or destroyed (or would be).
  type: bool
  returned: always
hostname:
  description: The inventory hostname the C(vastai) inventory would use (the label).
  type: str
  returned: always
  sample: vastllm-1
instance:
  description:
    - The instance as the vast.ai API returns it (null when absent or in check mode), without
      the fields that can hold secrets (C(extra_env), C(jupyter_token), C(onstart)).
  type: dict
  returned: always
  sample: {"id": 1234567, "label": "vastllm-1", "actual_status": "running"}
hostvars:
  description: Same keys as the C(vastai) inventory's hostvars (C(ansible_host), C(ansible_port),
    C(ansible_user), C(vastai_id), C(vastai_status), ...); empty when there is no instance.
  type: dict
  returned: always
  sample: {"ansible_host": "203.0.113.7", "ansible_port": 41022, "ansible_user": "root",
           "vastai_id": 1234567, "vastai_status": "running", "vastai_dph_total": 0.42}
offer:
  description: The offer that was (or in check mode would be) rented.
  type: dict
  returned: when an instance is rented
  sample: {"id": 30000012, "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 0.42}
actions:
  description: What was done, in order (C(rent), C(attach_ssh_key), C(start), C(stop), C(destroy)).
  type: list
  elements: str
  returned: always
  sample: [rent, attach_ssh_key]
destroyed:
  description: Ids of destroyed instances.
  type: list
  elements: int
  returned: when O(state=absent)
msg:
  description: A human summary, e.g. the offer and its price.
  type: str
  returned: always
rented:
  description:
    - On a failure after this run rented an instance, the instance that is now billed (until it is
      destroyed), so it is never lost; C(msg) names it too.
  type: dict
  returned: on failure after a successful rent
  sample: {"id": 1234567, "label": "vastllm-1", "dph_total": 0.42}
status:
  description: The HTTP status of the vast.ai API answer that failed the task.
  type: int
  returned: on API failures
  sample: 404
"""

import socket
import time
from collections.abc import Mapping
from typing import Any

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible_collections.vastllm.stack.plugins.module_utils.vastai_api import (
    VastAIClient,
    VastAIError,
    resolve_api_key,
)
from ansible_collections.vastllm.stack.plugins.module_utils.vastai_hosts import (
    default_hostname,
    instance_hostvars,
    instance_status,
    ssh_endpoint,
)
from ansible_collections.vastllm.stack.plugins.module_utils.vastai_offers import (
    OfferCriteria,
    OfferError,
    build_create_payload,
    build_offer_query,
    describe_offer,
    select_offer,
)


def ssh_banner_ok(host: str, port: int, timeout: float) -> bool:
    """True when something at host:port answers with an SSH banner (``SSH-``)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            data = b""
            while len(data) < 256 and b"\n" not in data:
                chunk = conn.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"SSH-")
    except OSError:
        return False


def find_by_label(client: VastAIClient, label: str) -> list[dict[str, Any]]:
    """Instances whose label is exactly ``label`` (server filter, re-checked here)."""
    rows = client.list_instances({"label": {"eq": label}})
    return [r for r in rows if r.get("label") == label]


def is_running(instance: dict[str, Any]) -> bool:
    return bool(instance_status(instance) == "running")


def is_stopped(instance: dict[str, Any]) -> bool:
    """Not running and not meant to run now: asked to stop, or its container is down (to start)."""
    return instance.get("intended_status") == "stopped" or instance_status(instance) in (
        "exited",
        "stopped",
    )


def stop_requested(instance: dict[str, Any]) -> bool:
    """Whether a stop was asked for (for state=stopped): vast.ai's ``intended_status`` is what the
    user asked, ``actual_status`` only the container's state - an exited container of an
    instance still meant to run is billed. Without ``intended_status``, the container decides."""
    intended = instance.get("intended_status")
    if intended in ("running", "stopped"):
        return bool(intended == "stopped")
    return instance_status(instance) in ("exited", "stopped")


class PlanError(Exception):
    """The wanted state cannot be reached from the current one; the message says why."""


def check_rent_options(p: Mapping[str, Any]) -> None:
    """Renting needs the cost guard and an image; raise PlanError naming the missing ones."""
    missing = [name for name in ("max_dph", "image") if p.get(name) in (None, "")]
    if missing:
        raise PlanError(
            f"no instance labelled {p['label']!r} exists, and renting one needs "
            f"{' and '.join(missing)} (state={p['state']}); starting or stopping an existing "
            "instance needs neither"
        )


def offer_criteria(p: Mapping[str, Any]) -> OfferCriteria:
    """The module's offer options as search criteria (pure)."""
    check_rent_options(p)
    return OfferCriteria(
        max_dph=float(p["max_dph"]),
        gpu_names=tuple(p["gpu_names"] or ()),
        num_gpus=int(p["num_gpus"]),
        min_gpu_ram_gb=p["min_gpu_ram"],
        min_disk_gb=p["min_disk"] if p["min_disk"] is not None else float(p["disk"]),
        min_reliability=p["min_reliability"],
        verified_only=bool(p["verified_only"]),
        region=p["region"],
        extra_filters=p["offer_filters"] or {},
    )


def needs_offers(p: Mapping[str, Any], found: list[dict[str, Any]]) -> bool:
    """Whether planning needs the offer search: only to rent a missing instance."""
    return p["state"] in ("present", "running") and not found


def _dph(offer: Mapping[str, Any] | None) -> float | None:
    try:
        return float(offer["dph_total"]) if offer is not None else None
    except (KeyError, TypeError, ValueError):
        return None


def plan(
    p: Mapping[str, Any],
    found: list[dict[str, Any]],
    offers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What to do (pure): from the module's options, the instances carrying the label and, when
    renting, the offers of the search, to a plan.

    The plan: ``actions`` (in order, from C(rent), C(attach_ssh_key), C(start), C(stop),
    C(destroy)), ``instance`` (the current one, or None), ``offer`` and ``dph`` (the chosen offer
    and its $/h when renting), ``destroy`` (ids), ``wait`` (wait for running/SSH afterwards),
    ``before`` / ``after`` (statuses for the diff) and ``msg`` (the summary, in the future tense
    of check mode). Raises PlanError when the wanted state cannot be reached.
    """
    label = p["label"]
    result: dict[str, Any] = {
        "actions": [],
        "instance": found[0] if len(found) == 1 else None,
        "offer": None,
        "dph": None,
        "destroy": [],
        "wait": False,
        "before": instance_status(found[0]) if found else "absent",
        "after": instance_status(found[0]) if found else "absent",
        "msg": "",
    }
    state = p["state"]
    if state == "absent":
        ids = [int(r["id"]) for r in found]
        result.update(destroy=ids, actions=["destroy"] * len(ids), after="absent")
        result["msg"] = (
            f"would destroy {len(ids)} instance(s) labelled {label!r}: {', '.join(map(str, ids))}"
            if ids
            else f"no instance labelled {label!r}"
        )
        return result
    if len(found) > 1:
        ids = ", ".join(str(r.get("id")) for r in found)
        hint = " - destroy or relabel the extra ones" if state != "stopped" else ""
        raise PlanError(
            f"label {label!r} matches {len(found)} instances ({ids}); labels must be unique{hint}"
        )
    if state == "stopped":
        if not found:
            raise PlanError(
                f"no instance labelled {label!r} to stop; rent it with state=present first"
            )
        instance = found[0]
        if stop_requested(instance):
            result["msg"] = f"instance {instance['id']} ({label}) is already stopped"
        else:
            result.update(actions=["stop"], after="exited")
            result["msg"] = f"would stop instance {instance['id']} ({label})"
        return result
    if not found:
        criteria = offer_criteria(p)
        candidates = list(offers or [])
        offer = select_offer(candidates, criteria)
        if offer is None:
            raise PlanError(
                f"no vast.ai offer matches the criteria at or below ${criteria.max_dph}/h "
                f"({len(candidates)} offers returned by the search; relax gpu_names, region, "
                f"min_reliability or raise max_dph)"
            )
        actions = ["rent"] + (["attach_ssh_key"] if p["ssh_key"] else [])
        result.update(
            actions=actions, offer=offer, dph=_dph(offer), wait=bool(p["wait"]), after="running"
        )
        result["msg"] = f"would rent {describe_offer(offer)} as {label!r}"
        return result
    instance = found[0]
    if state == "running" and is_stopped(instance):
        result.update(actions=["start"], wait=bool(p["wait"]), after="running")
        result["msg"] = f"would start instance {instance['id']} ({label})"
        return result
    needs_wait = not is_running(instance) or p["wait_ssh"]
    result["wait"] = bool(p["wait"]) and not is_stopped(instance) and needs_wait
    result["msg"] = f"instance {instance['id']} ({label}) exists ({instance_status(instance)})"
    return result


class Runner:
    """Finds the current state, plans, and applies the plan over a client (replaceable in tests).

    Once an instance is rented, every failure names it (id, label, $/h) in ``msg`` and in the
    ``instance`` and ``rented`` fields: it is billed whether or not the rest of the run works.
    """

    def __init__(self, module: AnsibleModule, client: VastAIClient) -> None:
        self.module = module
        self.client = client
        self.params = module.params
        self.actions: list[str] = []
        self.rented: dict[str, Any] | None = None
        self.last_seen: dict[str, Any] | None = None

    def fail(self, msg: str, **extra: Any) -> None:
        if self.rented is not None:
            rented = self.rented
            price = f"${rented['dph_total']:.4f}/h" if rented["dph_total"] is not None else "$?/h"
            msg = (
                f"{msg}. Instance {rented['id']} labelled {rented['label']!r} ({price}) was rented "
                f"by this run and is billed until destroyed: rerun to continue with it, or "
                f"destroy it with state=absent"
            )
            extra.setdefault("instance", self.last_seen or dict(rented))
            extra["rented"] = rented
            extra["changed"] = True
        self.module.fail_json(msg=msg, actions=self.actions, **extra)

    def result(
        self, changed: bool, instance: dict[str, Any] | None, msg: str, **extra: Any
    ) -> dict[str, Any]:
        p = self.params
        hostvars = (
            instance_hostvars(instance, p["hostvars_prefix"], p["connect_with"]) if instance else {}
        )
        name = default_hostname(instance) if instance else p["label"]
        return {
            "changed": changed,
            "instance": instance,
            "hostvars": hostvars,
            "hostname": name,
            "actions": self.actions,
            "msg": msg,
            **extra,
        }

    def diff(self, before: str, after: str) -> dict[str, Any]:
        label = self.params["label"]
        return {
            "before": {"label": label, "status": before},
            "after": {"label": label, "status": after},
        }

    # -- waiting -----------------------------------------------------------------------

    def wait_ready(self, instance_id: int, deadline: float) -> dict[str, Any]:
        p = self.params
        while True:
            last = self.client.get_instance(instance_id)
            if last is None:
                self.fail(f"instance {instance_id} ({p['label']}) disappeared while waiting")
                raise AssertionError("unreachable")
            self.last_seen = last
            if is_running(last):
                if not p["wait_ssh"]:
                    return last
                host, port, _mode = ssh_endpoint(last, p["connect_with"])
                if host and port and ssh_banner_ok(host, port, min(5.0, p["poll_interval"] + 1)):
                    return last
            if time.monotonic() >= deadline:
                status = instance_status(last)
                what = "SSH to answer" if is_running(last) else "the instance to run"
                self.fail(
                    f"timed out after {p['wait_timeout']}s waiting for {what} on instance "
                    f"{instance_id} ({p['label']}); last status {status!r}: "
                    f"{last.get('status_msg') or 'no status message'}",
                    instance=last,
                )
            time.sleep(max(0.05, float(p["poll_interval"])))

    # -- plan and apply ----------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        p = self.params
        found = find_by_label(self.client, p["label"])
        offers = None
        if needs_offers(p, found):
            offers = self.client.search_offers(
                build_offer_query(offer_criteria(p), float(p["disk"]))
            )
        todo = plan(p, found, offers)
        extra: dict[str, Any] = {}
        if todo["offer"] is not None:
            extra["offer"] = todo["offer"]
        if p["state"] == "absent":
            extra["destroyed"] = todo["destroy"]
        if self.module.check_mode:
            self.actions.extend(todo["actions"])
            instance = todo["instance"] if p["state"] != "absent" else None
            return self.result(
                bool(todo["actions"]),
                instance,
                todo["msg"],
                diff=self.diff(todo["before"], todo["after"]),
                **extra,
            )
        return self.apply(todo, extra)

    def apply(self, todo: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        """Carry out the plan, in order; any failure after a rental names the rental."""
        p = self.params
        label = p["label"]
        instance = todo["instance"]
        instance_id = int(instance["id"]) if instance is not None else None
        doomed = iter(todo["destroy"])
        try:
            for action in todo["actions"]:
                if action == "rent":
                    instance_id = self.rent(todo["offer"])
                    self.rented = {"id": instance_id, "label": label, "dph_total": todo["dph"]}
                elif action == "attach_ssh_key":
                    if instance_id is None:  # the plan rents first when there is no instance
                        raise AssertionError(f"plan error: {action} without an instance")
                    self.client.attach_ssh_key(instance_id, p["ssh_key"].strip())
                elif action == "start":
                    if instance_id is None:  # the plan rents first when there is no instance
                        raise AssertionError(f"plan error: {action} without an instance")
                    self.client.set_state(instance_id, "running")
                elif action == "stop":
                    if instance_id is None:  # the plan rents first when there is no instance
                        raise AssertionError(f"plan error: {action} without an instance")
                    self.client.set_state(instance_id, "stopped")
                elif action == "destroy":
                    self.client.destroy_instance(next(doomed))
                self.actions.append(action)
            if p["state"] == "absent":
                instance = None
            elif instance_id is not None and todo["wait"]:
                deadline = time.monotonic() + float(p["wait_timeout"])
                instance = self.wait_ready(instance_id, deadline)
            elif instance_id is not None and todo["actions"]:
                instance = self.client.get_instance(instance_id) or instance
        except VastAIError as err:
            step = self._step_name(todo["actions"])
            self.fail(f"{step}: {err.message}" if step else err.message, status=err.status)
            raise AssertionError("unreachable") from None
        after = instance_status(instance) if instance else todo["after"]
        return self.result(
            bool(todo["actions"]),
            instance,
            self._done_message(todo, instance_id),
            diff=self.diff(todo["before"], after if p["state"] != "absent" else "absent"),
            **extra,
        )

    def _step_name(self, planned: list[str]) -> str:
        """Which step failed, for the message (empty before the first change)."""
        if len(self.actions) < len(planned):
            return {
                "attach_ssh_key": "attaching the SSH key failed",
                "start": "starting the instance failed",
                "stop": "stopping the instance failed",
                "destroy": "destroying failed",
                "rent": "",
            }[planned[len(self.actions)]]
        return "waiting for the instance failed" if self.rented or self.actions else ""

    def _done_message(self, todo: dict[str, Any], instance_id: int | None) -> str:
        label = self.params["label"]
        if not todo["actions"]:
            return str(todo["msg"])
        first = todo["actions"][0]
        if first == "rent":
            return f"rented {describe_offer(todo['offer'])} as {label!r} (instance {instance_id})"
        if first == "destroy":
            ids = todo["destroy"]
            return (
                f"destroyed {len(ids)} instance(s) labelled {label!r}: {', '.join(map(str, ids))}"
            )
        verb = {"start": "started", "stop": "stopped"}[first]
        return f"{verb} instance {instance_id} ({label})"

    def rent(self, offer: dict[str, Any]) -> int:
        """Rent ``offer``; a rental that went through before the reply was lost is recovered."""
        p = self.params
        payload = build_create_payload(
            image=p["image"],
            disk_gb=float(p["disk"]),
            label=p["label"],
            env=p["env"],
            ports=p["ports"],
            onstart=p["onstart"],
            ssh_direct=p["ssh_direct"],
            image_login=p["image_login"],
        )
        try:
            return self.client.create_instance(int(offer["id"]), payload)
        except VastAIError as err:
            # The rental may have gone through before the connection broke: look before failing.
            found = find_by_label(self.client, p["label"])
            if len(found) != 1:
                raise
            instance_id = int(found[0]["id"])
            self.module.warn(
                f"renting reported an error ({err.message}) but instance {instance_id} "
                f"labelled {p['label']!r} exists; continuing with it"
            )
            return instance_id


ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "label": {"type": "str", "required": True},
    "state": {
        "type": "str",
        "default": "present",
        "choices": ["present", "running", "stopped", "absent"],
    },
    "api_key": {
        "type": "str",
        "no_log": True,
        "fallback": (env_fallback, ["VAST_API_KEY"]),
    },
    "api_url": {
        "type": "str",
        "default": "https://console.vast.ai",
        "fallback": (env_fallback, ["VAST_URL"]),
    },
    "validate_certs": {"type": "bool", "default": True},
    "timeout": {"type": "int", "default": 30},
    "retries": {"type": "int", "default": 5},
    "max_dph": {"type": "float"},
    "gpu_names": {"type": "list", "elements": "str", "default": []},
    "num_gpus": {"type": "int", "default": 1},
    "min_gpu_ram": {"type": "float"},
    "min_disk": {"type": "float"},
    "min_reliability": {"type": "float"},
    "verified_only": {"type": "bool", "default": True},
    "region": {"type": "str"},
    "offer_filters": {"type": "dict", "default": {}},
    "image": {"type": "str"},
    "image_login": {"type": "str", "no_log": True},
    "disk": {"type": "float", "default": 32},
    "env": {"type": "dict", "default": {}, "no_log": True},
    "ports": {"type": "list", "elements": "raw", "default": []},
    "onstart": {"type": "str", "no_log": True},
    "ssh_key": {"type": "str", "no_log": False},
    "ssh_direct": {"type": "bool", "default": True},
    "connect_with": {
        "type": "str",
        "default": "auto",
        "choices": ["auto", "direct", "proxy"],
    },
    "hostvars_prefix": {"type": "str", "default": "vastai_"},
    "wait": {"type": "bool", "default": True},
    "wait_ssh": {"type": "bool", "default": True},
    "wait_timeout": {"type": "int", "default": 600},
    "poll_interval": {"type": "float", "default": 5},
}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    p = module.params
    if not p["label"].strip():
        module.fail_json(msg="label must not be empty: it is the identity of the instance")
    if p["wait_timeout"] < 0 or p["poll_interval"] < 0:
        module.fail_json(msg="wait_timeout and poll_interval must not be negative")
    try:
        key = resolve_api_key(p["api_key"])
        client = VastAIClient(
            key,
            api_url=p["api_url"],
            timeout=float(p["timeout"]),
            retries=int(p["retries"]),
            validate_certs=bool(p["validate_certs"]),
        )
    except VastAIError as err:
        module.fail_json(msg=err.message, status=err.status)
    runner = Runner(module, client)
    try:
        result = runner.run()
    except (PlanError, OfferError) as err:
        runner.fail(str(err))
    except VastAIError as err:
        runner.fail(err.message, status=err.status)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
