# Copyright: vastllm contributors
# Apache-2.0
from __future__ import annotations

DOCUMENTATION = r"""
name: vastai
short_description: vast.ai instances as an Ansible inventory
description:
  - Discovers the instances of a vast.ai account through the paginated v1 instance listing
    (C(/api/v1/instances/), 25 per page, following C(next_token)).
  - Every host lands in group C(vastai); by default also in keyed groups by GPU model, label and
    status (turn off with O(default_keyed_groups=false)).
  - Connection variables follow O(connect_with) - direct SSH (public IP + host port mapped to
    C(22/tcp)) or the vast.ai SSH proxy (C(ssh_host)/C(ssh_port), +1 on Jupyter images).
  - The API key is used only in the C(Authorization) header; it never appears in hostvars, in
    C(--list) output, in the cache or in error messages.
  - The configuration file name must end in C(vastai.yml) or C(vastai.yaml).
version_added: "0.1.0"
author:
  - vastllm contributors (@vastllm)
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
  - vastllm.stack.vastai
  - vastllm.stack.vastai.plugin_env
seealso:
  - module: vastllm.stack.vastai_instance
    description: Rent, start, stop and destroy the instances this inventory lists.
options:
  plugin:
    description:
      - Marks the file as a configuration of this plugin.
      - The short name V(vastai) is accepted for configurations written before the plugin was
        part of the collection, when the plugin is enabled by its FQCN in C(enable_plugins)
        (the C(auto) plugin only finds it by V(vastllm.stack.vastai)).
    required: true
    type: str
    choices: [vastllm.stack.vastai, vastai]
  retry_backoff:
    description: First backoff delay in seconds (doubles on each retry, capped at 30).
    type: float
    default: 1.0
  statuses:
    description:
      - Keep only instances whose C(actual_status) is in this list
        (C(running), C(loading), C(exited), C(created), ...).
      - An empty list keeps every instance.
    type: list
    elements: str
    default: [running]
  labels:
    description: Keep only instances whose label matches one of these shell-style globs.
    type: list
    elements: str
    default: []
  gpu_names:
    description:
      - Keep only instances whose GPU model matches one of these globs.
      - Underscores match spaces, so C(RTX_4090) matches the API's C(RTX 4090).
    type: list
    elements: str
    default: []
  filters:
    description:
      - Server-side filters passed as C(select_filters) to the listing, one entry per API
        field, each a mapping of operator to value (see EXAMPLES).
      - Operators are C(eq), C(neq), C(in), C(notin), C(gt), C(gte), C(lt), C(lte).
    type: dict
    default: {}
  connect_with:
    description:
      - C(direct) - C(public_ipaddr) and the host port mapped to C(22/tcp); instances without
        that mapping get no C(ansible_host).
      - C(proxy) - C(ssh_host)/C(ssh_port) through the vast.ai SSH proxy.
      - C(auto) - direct when mapped, else proxy.
    type: str
    choices: [auto, direct, proxy]
    default: auto
  hostname:
    description:
      - Jinja2 expression (no braces) giving the inventory hostname, evaluated with the
        instance's API fields and the prefixed hostvars, e.g. C("'gpu-' ~ id").
      - Default - the label when set, else the instance id.
      - When two instances end up with the same name, the later ones get C(-<id>) appended.
    type: str
  hostvars_prefix:
    description: Prefix of the instance facts set as hostvars.
    type: str
    default: vastai_
  default_keyed_groups:
    description:
      - Add hosts to C(<prefix>gpu_<model>), C(<prefix>label_<label>) and
        C(<prefix>status_<status>) groups (prefix is O(hostvars_prefix)).
      - Computed without templating, so they cost nothing at 1,000 hosts.
    type: bool
    default: true
"""

EXAMPLES = r"""
# inventory/vastai.yml - running instances, key from VAST_API_KEY or the vastai CLI.
plugin: vastllm.stack.vastai
groups:
  vastllm: vastai_status == 'running'

---
# Only the RTX 4090 boxes labelled vastllm-*, through the SSH proxy, cached for 5 minutes.
plugin: vastllm.stack.vastai
labels: ["vastllm-*"]
gpu_names: [RTX_4090]
connect_with: proxy
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/vastllm/inventory
cache_timeout: 300

---
# Server-side filter: instances whose GPUs have at least 40 GB each (gpu_ram is in MB).
# Only stored columns can be filtered: vast.ai refuses computed ones (dph_total, num_gpus, ...).
plugin: vastllm.stack.vastai
filters:
  gpu_ram:
    gte: 40000

---
# Key from a vault, hostnames from the id, extra groups.
plugin: vastllm.stack.vastai
api_key: "{{ vault_vast_api_key }}"
hostname: "'vast-' ~ id"
keyed_groups:
  - key: vastai_geolocation.split(',')[-1] | trim
    prefix: region
compose:
  hourly_cost: vastai_dph_total
"""

import hashlib
from typing import Any

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible_collections.vastllm.stack.plugins.module_utils import vastai_api as api
from ansible_collections.vastllm.stack.plugins.module_utils import vastai_hosts as hosts


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "vastllm.stack.vastai"
    # What configuration files said before the plugin was part of the collection.
    SHORT_NAME = "vastai"

    def verify_file(self, path: str) -> bool:
        if not super().verify_file(path):
            return False
        return path.endswith(("vastai.yml", "vastai.yaml"))

    # -- options -----------------------------------------------------------------------

    def _api_key(self) -> str:
        key = self.get_option("api_key")
        if key and self.templar.is_template(key):
            key = self.templar.template(key)
        return str(api.resolve_api_key(str(key) if key else None))

    def _cache_key(self, path: str) -> str:
        # The account's data differs by URL and server-side filters; never by hashing the key.
        scope = repr((self.get_option("api_url"), sorted(self.get_option("filters").items())))
        digest = hashlib.sha256(scope.encode()).hexdigest()[:10]
        return f"{self.get_cache_key(path)}_{digest}"

    def _fetch(self) -> list[dict[str, Any]]:
        client = api.VastAIClient(
            self._api_key(),
            api_url=self.get_option("api_url"),
            timeout=float(self.get_option("timeout")),
            retries=int(self.get_option("retries")),
            backoff=float(self.get_option("retry_backoff")),
            validate_certs=bool(self.get_option("validate_certs")),
        )
        rows: list[dict[str, Any]] = client.list_instances(self.get_option("filters"))
        return rows

    # -- parse -------------------------------------------------------------------------

    def _read_config_data(self, path: str) -> dict[str, Any]:
        # Ansible accepts only the names the plugin was loaded by in `plugin:`; add the short one.
        names = list(getattr(self, "_redirected_names", None) or [self.NAME])
        if self.SHORT_NAME not in names:
            self._redirected_names = [*names, self.SHORT_NAME]
        data: dict[str, Any] = super()._read_config_data(path)
        return data

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        if self.get_option("connect_with") not in hosts.CONNECT_MODES:
            raise AnsibleParserError("vastai inventory: connect_with must be auto, direct or proxy")

        use_cache = bool(self.get_option("cache"))
        cache_key = self._cache_key(path)
        rows = None
        if use_cache and cache:
            try:
                rows = self._cache[cache_key]
            except KeyError:
                rows = None
        if rows is None:
            try:
                rows = self._fetch()
            except api.VastAIError as err:
                raise AnsibleParserError(f"vastai inventory: {err.message}") from None
            if use_cache:
                self._cache[cache_key] = rows
        self._populate(rows)

    def _populate(self, rows: list[dict[str, Any]]) -> None:
        prefix = self.get_option("hostvars_prefix")
        connect_with = self.get_option("connect_with")
        statuses = self.get_option("statuses")
        labels = self.get_option("labels")
        gpu_names = self.get_option("gpu_names")
        hostname_expr = self.get_option("hostname")
        strict = self.get_option("strict")
        compose = self.get_option("compose")
        groups = self.get_option("groups")
        keyed = self.get_option("keyed_groups")
        default_groups = self.get_option("default_keyed_groups")

        self.inventory.add_group("vastai")
        taken: set[str] = set()
        for row in rows:
            if not hosts.instance_matches(row, statuses, labels, gpu_names):
                continue
            hostvars = hosts.instance_hostvars(row, prefix, connect_with)
            name = self._hostname(row, hostvars, hostname_expr, strict)
            if name in taken:
                renamed = f"{name}-{row.get('id')}"
                self.display.warning(
                    f"vastai inventory: instance {row.get('id')} would be named {name!r} like "
                    f"another one; using {renamed!r}"
                )
                name = renamed
            taken.add(name)
            self.inventory.add_host(name, group="vastai")
            for var, value in hostvars.items():
                self.inventory.set_variable(name, var, value)
            if default_groups:
                self._default_groups(name, hostvars, prefix)
            if compose or groups or keyed:
                self._set_composite_vars(compose, hostvars, name, strict=strict)
                self._add_host_to_composed_groups(groups, hostvars, name, strict=strict)
                self._add_host_to_keyed_groups(keyed, hostvars, name, strict=strict)

    def _hostname(
        self, row: dict[str, Any], hostvars: dict[str, Any], expr: str | None, strict: bool
    ) -> str:
        if not expr:
            return str(hosts.default_hostname(row))
        try:
            value = self._compose(expr, {**row, **hostvars})
        except Exception as err:
            if strict:
                raise AnsibleParserError(
                    f"vastai inventory: hostname expression failed for instance {row.get('id')}: "
                    f"{err}"
                ) from None
            value = None
        text = str(value).strip() if value is not None else ""
        if not text:
            return str(hosts.default_hostname(row))
        return text

    def _default_groups(self, host: str, hostvars: dict[str, Any], prefix: str) -> None:
        for key, value in (
            ("gpu", hostvars.get(prefix + "gpu_name")),
            ("label", hostvars.get(prefix + "label")),
            ("status", hostvars.get(prefix + "status")),
        ):
            if value in (None, ""):
                continue
            group = self._sanitize_group_name(f"{prefix}{key}_{value}")
            group = self.inventory.add_group(group)
            self.inventory.add_child(group, host)
