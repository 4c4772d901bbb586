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
  - vastllm contributors
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
  api_key:
    description:
      - vast.ai API key. Defaults to E(VAST_API_KEY), then the vastai CLI's key file.
    type: str
  api_url:
    description: Base URL of the vast.ai API. Defaults to E(VAST_URL), then the public console.
    type: str
  validate_certs:
    description: Verify the TLS certificate of O(api_url).
    type: bool
    default: true
  timeout:
    description: Seconds to wait for one API response.
    type: int
    default: 30
  retries:
    description: Retries on 429/502/503/504 and network errors (Retry-After honoured).
    type: int
    default: 5
  max_dph:
    description:
      - Cost guard - the most this instance may cost, in dollars per hour (whole instance).
      - Required for V(present) and V(running); an offer above it is never rented.
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
    description: Docker image to run. Required for V(present) and V(running).
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
    platforms: posix
notes:
  - Labels are the identity; two instances with the same label make V(present)/V(running)/
    V(stopped) fail (V(absent) destroys them all).
  - vast.ai bills by the second while an instance exists, stopped instances still pay storage.
"""

EXAMPLES = r"""
- name: Rent one RTX 4090 for the proxy, at most $0.60/h
  vastai_instance:
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
  vastai_instance:
    label: vastllm-1
    state: stopped

- name: Destroy it
  vastai_instance:
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
"""

import socket
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible_collections.vastllm.stack.plugins.module_utils.vastai_api import (
    VastAIClient,
    VastAIError,
    default_hostname,
    instance_hostvars,
    instance_status,
    resolve_api_key,
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
    return instance.get("intended_status") == "stopped" or instance_status(instance) in (
        "exited",
        "stopped",
    )


class Runner:
    """The module's actions, over a client and a clock (both replaceable in tests)."""

    def __init__(self, module: AnsibleModule, client: VastAIClient) -> None:
        self.module = module
        self.client = client
        self.params = module.params
        self.actions: list[str] = []

    def fail(self, msg: str, **extra: Any) -> None:
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

    def diff(self, before: dict[str, Any] | None, after_status: str) -> dict[str, Any]:
        label = self.params["label"]
        return {
            "before": {"label": label, "status": instance_status(before) if before else "absent"},
            "after": {"label": label, "status": after_status},
        }

    # -- waiting -----------------------------------------------------------------------

    def wait_ready(self, instance_id: int, deadline: float) -> dict[str, Any]:
        p = self.params
        last: dict[str, Any] | None = None
        while True:
            last = self.client.get_instance(instance_id)
            if last is None:
                self.fail(f"instance {instance_id} ({p['label']}) disappeared while waiting")
                raise AssertionError("unreachable")
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

    # -- states ------------------------------------------------------------------------

    def criteria(self) -> OfferCriteria:
        p = self.params
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

    def rent(self) -> dict[str, Any]:
        p = self.params
        criteria = self.criteria()
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
        offers = self.client.search_offers(build_offer_query(criteria, float(p["disk"])))
        offer = select_offer(offers, criteria)
        if offer is None:
            self.fail(
                f"no vast.ai offer matches the criteria at or below ${criteria.max_dph}/h "
                f"({len(offers)} offers returned by the search; relax gpu_names, region, "
                f"min_reliability or raise max_dph)"
            )
            raise AssertionError("unreachable")
        summary = describe_offer(offer)
        if self.module.check_mode:
            self.actions.append("rent")
            return self.result(
                True,
                None,
                f"would rent {summary} as {p['label']!r}",
                offer=offer,
                diff=self.diff(None, "running"),
            )
        try:
            instance_id = self.client.create_instance(int(offer["id"]), payload)
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
        self.actions.append("rent")
        if p["ssh_key"]:
            self.client.attach_ssh_key(instance_id, p["ssh_key"].strip())
            self.actions.append("attach_ssh_key")
        deadline = time.monotonic() + float(p["wait_timeout"])
        instance = (
            self.wait_ready(instance_id, deadline)
            if p["wait"]
            else self.client.get_instance(instance_id)
        )
        return self.result(
            True,
            instance,
            f"rented {summary} as {p['label']!r} (instance {instance_id})",
            offer=offer,
            diff=self.diff(None, instance_status(instance) if instance else "loading"),
        )

    def present(self, want_running: bool) -> dict[str, Any]:
        p = self.params
        found = find_by_label(self.client, p["label"])
        if len(found) > 1:
            ids = ", ".join(str(r.get("id")) for r in found)
            self.fail(
                f"label {p['label']!r} matches {len(found)} instances ({ids}); labels must be "
                f"unique - destroy or relabel the extra ones"
            )
        if not found:
            return self.rent()
        instance = found[0]
        if want_running and is_stopped(instance):
            if self.module.check_mode:
                self.actions.append("start")
                return self.result(
                    True,
                    instance,
                    f"would start instance {instance['id']} ({p['label']})",
                    diff=self.diff(instance, "running"),
                )
            self.client.set_state(int(instance["id"]), "running")
            self.actions.append("start")
            deadline = time.monotonic() + float(p["wait_timeout"])
            if p["wait"]:
                instance = self.wait_ready(int(instance["id"]), deadline)
            return self.result(
                True,
                instance,
                f"started instance {instance['id']} ({p['label']})",
                diff=self.diff(found[0], instance_status(instance)),
            )
        needs_wait = not is_running(instance) or p["wait_ssh"]
        if p["wait"] and not self.module.check_mode and not is_stopped(instance) and needs_wait:
            deadline = time.monotonic() + float(p["wait_timeout"])
            instance = self.wait_ready(int(instance["id"]), deadline)
        return self.result(
            False,
            instance,
            f"instance {instance['id']} ({p['label']}) exists ({instance_status(instance)})",
            diff=self.diff(instance, instance_status(instance)),
        )

    def stopped(self) -> dict[str, Any]:
        p = self.params
        found = find_by_label(self.client, p["label"])
        if not found:
            self.fail(
                f"no instance labelled {p['label']!r} to stop; rent it with state=present first"
            )
        if len(found) > 1:
            ids = ", ".join(str(r.get("id")) for r in found)
            self.fail(f"label {p['label']!r} matches {len(found)} instances ({ids})")
        instance = found[0]
        if is_stopped(instance):
            return self.result(
                False,
                instance,
                f"instance {instance['id']} ({p['label']}) is already stopped",
                diff=self.diff(instance, instance_status(instance)),
            )
        self.actions.append("stop")
        if self.module.check_mode:
            return self.result(
                True,
                instance,
                f"would stop instance {instance['id']} ({p['label']})",
                diff=self.diff(instance, "exited"),
            )
        self.client.set_state(int(instance["id"]), "stopped")
        after = self.client.get_instance(int(instance["id"])) or instance
        return self.result(
            True,
            after,
            f"stopped instance {instance['id']} ({p['label']})",
            diff=self.diff(instance, instance_status(after)),
        )

    def absent(self) -> dict[str, Any]:
        p = self.params
        found = find_by_label(self.client, p["label"])
        if not found:
            return self.result(
                False,
                None,
                f"no instance labelled {p['label']!r}",
                destroyed=[],
                diff=self.diff(None, "absent"),
            )
        ids = [int(r["id"]) for r in found]
        if not self.module.check_mode:
            for instance_id in ids:
                self.client.destroy_instance(instance_id)
        self.actions.extend("destroy" for _ in ids)
        verb = "would destroy" if self.module.check_mode else "destroyed"
        return self.result(
            True,
            None,
            f"{verb} {len(ids)} instance(s) labelled {p['label']!r}: {', '.join(map(str, ids))}",
            destroyed=ids,
            diff=self.diff(found[0], "absent"),
        )


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
    "api_url": {"type": "str", "fallback": (env_fallback, ["VAST_URL"])},
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
        required_if=[
            ("state", "present", ("max_dph", "image")),
            ("state", "running", ("max_dph", "image")),
        ],
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
        runner = Runner(module, client)
        if p["state"] in ("present", "running"):
            result = runner.present(want_running=p["state"] == "running")
        elif p["state"] == "stopped":
            result = runner.stopped()
        else:
            result = runner.absent()
    except VastAIError as err:
        module.fail_json(msg=err.message, status=err.status)
    except OfferError as err:
        module.fail_json(msg=str(err))
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
