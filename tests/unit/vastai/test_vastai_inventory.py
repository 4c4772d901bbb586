"""The `vastai` inventory plugin, run in-process against the loopback emulator.

Like the hcloud/aws_ec2 plugin tests: the plugin is loaded through Ansible's own plugin
loader (so DOCUMENTATION defines its options), parses a config file from tmp_path and fills
a real InventoryData.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleError, AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import inventory_loader

from vastllm_lab.vastai.fixtures import make_instance
from vastllm_lab.vastai.state import Fault

REPO = Path(__file__).resolve().parents[3]
PLUGIN = "vastllm.stack.vastai"


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch, tmp_path):
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.delenv("VAST_URL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no CLI key file from the real home


def run(lab, tmp_path, use_cache=True, **options):
    """Parse a config file with ``options``; returns (inventory, plugin)."""
    config = {"plugin": PLUGIN, "api_url": lab.url, "api_key": "lab-key", "retries": 0}
    config.update(options)
    path = tmp_path / "test.vastai.yml"
    path.write_text(yaml.safe_dump(config))
    plugin = inventory_loader.get(PLUGIN)
    inventory = InventoryData()
    plugin.parse(inventory, DataLoader(), str(path), cache=use_cache)
    if getattr(plugin, "_cache", None) is not None and plugin.get_option("cache"):
        plugin.update_cache_if_changed()  # what InventoryManager does after parse
    return inventory, plugin


def hosts_of(inventory, group):
    return sorted(h.name for h in inventory.groups[group].get_hosts())


def hv(inventory, host):
    return inventory.get_host(host).get_vars()


# -- verify_file ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vastai.yml", True),
        ("prod.vastai.yaml", True),
        ("hosts.yml", False),
        ("vastai.json", False),
    ],
)
def test_verify_file(tmp_path, name, expected):
    path = tmp_path / name
    path.write_text("plugin: vastllm.stack.vastai\n")
    assert inventory_loader.get(PLUGIN).verify_file(str(path)) is expected


def test_verify_file_missing(tmp_path):
    assert inventory_loader.get(PLUGIN).verify_file(str(tmp_path / "vastai.yml")) is False


def test_short_plugin_name_of_older_configurations_still_works(lab, tmp_path):
    inventory, _ = run(lab, tmp_path, plugin="vastai")
    assert len(hosts_of(inventory, "vastai")) == 56


def test_config_of_another_plugin_is_refused(lab, tmp_path):
    with pytest.raises(AnsibleParserError, match="Incorrect plugin name"):
        run(lab, tmp_path, plugin="amazon.aws.aws_ec2")


# -- defaults -------------------------------------------------------------------------


def test_default_lists_running_instances_in_group_vastai(lab, tmp_path):
    inventory, _ = run(lab, tmp_path)
    running = [r for r in lab.state.instances.values() if r["actual_status"] == "running"]
    names = hosts_of(inventory, "vastai")
    assert len(names) == len(running) == 56
    unlabeled = next(r for r in running if not r["label"])
    assert str(unlabeled["id"]) in names  # no label: the id
    assert "lab-0001" in names  # label when set
    vars_ = hv(inventory, "lab-0001")
    assert vars_["ansible_user"] == "root"
    assert vars_["ansible_host"] == "127.0.0.1"
    assert vars_["ansible_port"] == int(
        lab.state.instances[9000001]["ports"]["22/tcp"][0]["HostPort"]
    )
    for fact in (
        "id",
        "label",
        "status",
        "gpu_name",
        "num_gpus",
        "gpu_ram",
        "cpu_ram",
        "disk_space",
        "public_ipaddr",
        "ports",
        "dph_total",
        "geolocation",
        "image",
    ):
        assert f"vastai_{fact}" in vars_, fact


def test_default_keyed_groups_by_gpu_label_status(lab, tmp_path):
    inventory, _ = run(lab, tmp_path)
    assert "lab-0001" in hosts_of(inventory, "vastai_label_lab_0001")
    gpu = hv(inventory, "lab-0001")["vastai_gpu_name"].replace(" ", "_")
    assert "lab-0001" in hosts_of(inventory, f"vastai_gpu_{gpu}")
    assert len(hosts_of(inventory, "vastai_status_running")) == 56


def test_default_keyed_groups_can_be_turned_off(lab, tmp_path):
    inventory, _ = run(lab, tmp_path, default_keyed_groups=False)
    assert [g for g in inventory.groups if g.startswith("vastai_")] == []


def test_api_key_never_in_hostvars(lab, tmp_path):
    inventory, _ = run(lab, tmp_path)
    dumped = json.dumps({h: hv(inventory, h) for h in inventory.hosts}, default=str)
    assert "lab-key" not in dumped


def test_api_key_may_be_a_template(lab, tmp_path):
    inventory, _ = run(lab, tmp_path, api_key="{{ 'lab' ~ '-key' }}")
    assert len(inventory.hosts) == 56


def test_api_key_from_environment(lab, tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_API_KEY", "lab-key")
    config = {"plugin": PLUGIN, "api_url": lab.url}
    path = tmp_path / "env.vastai.yml"
    path.write_text(yaml.safe_dump(config))
    inventory = InventoryData()
    inventory_loader.get(PLUGIN).parse(inventory, DataLoader(), str(path))
    assert len(inventory.hosts) == 56


def test_api_key_from_cli_key_file(lab, tmp_path):
    (tmp_path / ".config" / "vastai").mkdir(parents=True)
    (tmp_path / ".config" / "vastai" / "vast_api_key").write_text("lab-key\n")
    path = tmp_path / "file.vastai.yml"
    path.write_text(yaml.safe_dump({"plugin": PLUGIN, "api_url": lab.url}))
    inventory = InventoryData()
    inventory_loader.get(PLUGIN).parse(inventory, DataLoader(), str(path))
    assert len(inventory.hosts) == 56


# -- filters -------------------------------------------------------------------------


def test_statuses_filter(lab, tmp_path):
    inventory, _ = run(lab, tmp_path, statuses=[])
    assert len(inventory.hosts) == 60
    inventory, _ = run(lab, tmp_path, statuses=["exited", "loading"])
    statuses = {hv(inventory, h)["vastai_status"] for h in inventory.hosts}
    assert statuses == {"exited", "loading"}
    for host in inventory.hosts:
        assert (
            "ansible_host" not in hv(inventory, host)
            or hv(inventory, host)["vastai_connect_with"] == "proxy"
        )


def test_labels_globs(lab, tmp_path):
    inventory, _ = run(lab, tmp_path, labels=["lab-000?", "lab-0055"])
    assert hosts_of(inventory, "vastai") == [
        "lab-0001", "lab-0002", "lab-0003", "lab-0004", "lab-0005", "lab-0006", "lab-0008",
        "lab-0055",
    ]  # fmt: skip


def test_gpu_names_with_underscores(lab, tmp_path):
    inventory, _ = run(lab, tmp_path, gpu_names=["RTX_4090"])
    assert inventory.hosts
    assert {hv(inventory, h)["vastai_gpu_name"] for h in inventory.hosts} == {"RTX 4090"}


def test_server_side_filters(lab, tmp_path):
    inventory, _ = run(lab, tmp_path, filters={"gpu_ram": {"gte": 40000}})
    assert inventory.hosts
    assert all(hv(inventory, h)["vastai_gpu_ram"] >= 40000 for h in inventory.hosts)
    running_big = sum(
        1
        for r in lab.state.instances.values()
        if r["gpu_ram"] >= 40000 and r["actual_status"] == "running"
    )
    assert len(inventory.hosts) == running_big


def test_bad_server_side_filter_is_reported(lab, tmp_path):
    with pytest.raises(AnsibleParserError, match="unknown operator"):
        run(lab, tmp_path, filters={"gpu_ram": {"about": 2}})


@pytest.mark.parametrize("field", ["dph_total", "num_gpus"])
def test_filter_on_a_computed_field_names_the_field(lab, tmp_path, field):
    """vast.ai answers 400 to a filter on a column it computes per row; the error names it."""
    with pytest.raises(AnsibleParserError, match=field):
        run(lab, tmp_path, filters={field: {"gte": 1}})


# -- connection -------------------------------------------------------------------------


def _seed(lab):
    lab.state.add_instance(make_instance(1, label="direct-box", ssh_port=30001, direct_port=41001))
    no_map = make_instance(2, label="proxy-box", ssh_port=30002)
    no_map["ports"] = {}
    lab.state.add_instance(no_map)
    jup = make_instance(3, label="jupyter-box", ssh_port=30003,
                        image_runtype="jupyter_direc ssh_proxy")  # fmt: skip
    jup["ports"] = {}
    lab.state.add_instance(jup)


def test_connect_with_auto(lab, tmp_path):
    _seed(lab)
    inventory, _ = run(lab, tmp_path, labels=["*-box"])
    assert (
        hv(inventory, "direct-box")["ansible_host"],
        hv(inventory, "direct-box")["ansible_port"],
    ) == ("127.0.0.1", 41001)
    assert hv(inventory, "proxy-box")["ansible_port"] == 30002
    assert hv(inventory, "proxy-box")["ansible_host"].endswith(".lab.invalid")
    assert hv(inventory, "jupyter-box")["ansible_port"] == 30004  # +1 on Jupyter images


def test_connect_with_proxy_and_direct(lab, tmp_path):
    _seed(lab)
    inventory, _ = run(lab, tmp_path, labels=["*-box"], connect_with="proxy")
    assert hv(inventory, "direct-box")["ansible_port"] == 30001
    assert hv(inventory, "direct-box")["vastai_connect_with"] == "proxy"
    inventory, _ = run(lab, tmp_path, labels=["*-box"], connect_with="direct")
    assert hv(inventory, "direct-box")["ansible_port"] == 41001
    assert "ansible_host" not in hv(inventory, "proxy-box")


def test_connect_with_invalid_value(lab, tmp_path):
    with pytest.raises(AnsibleError, match="connect_with"):
        run(lab, tmp_path, connect_with="telnet")


# -- naming -------------------------------------------------------------------------


def test_hostname_expression_and_prefix(lab, tmp_path):
    inventory, _ = run(lab, tmp_path, hostname="'vast-' ~ id", hostvars_prefix="v_")
    assert "vast-9000001" in inventory.hosts
    vars_ = hv(inventory, "vast-9000001")
    assert vars_["v_id"] == 9000001
    assert not any(k.startswith("vastai_") for k in vars_)
    assert "vast-9000001" in hosts_of(inventory, "v_status_running")


def test_bad_hostname_expression_strict_and_not(lab, tmp_path):
    with pytest.raises(AnsibleParserError, match="hostname expression failed"):
        run(lab, tmp_path, hostname="no_such_var ~ 'x'", strict=True)
    inventory, _ = run(lab, tmp_path, hostname="no_such_var ~ 'x'", strict=False)
    assert "lab-0001" in inventory.hosts  # falls back to the default name


def test_duplicate_labels_get_the_id_appended(lab, tmp_path):
    lab.state.add_instance(make_instance(1, label="twin"))
    lab.state.add_instance(make_instance(2, label="twin"))
    inventory, _ = run(lab, tmp_path, labels=["twin"])
    assert hosts_of(inventory, "vastai") == ["twin", "twin-2"]


# -- constructed -------------------------------------------------------------------------


def test_compose_groups_keyed_groups(lab, tmp_path):
    inventory, _ = run(
        lab,
        tmp_path,
        compose={"hourly": "vastai_dph_total * 24"},
        groups={"vastllm": "vastai_status == 'running'", "big": "vastai_num_gpus >= 4"},
        keyed_groups=[{"key": "vastai_geolocation.split(',')[-1] | trim", "prefix": "region"}],
    )
    vars_ = hv(inventory, "lab-0001")
    assert vars_["hourly"] == pytest.approx(vars_["vastai_dph_total"] * 24)
    assert len(hosts_of(inventory, "vastllm")) == 56
    assert all(hv(inventory, h)["vastai_num_gpus"] >= 4 for h in hosts_of(inventory, "big"))
    assert "region_US" in inventory.groups
    assert "region_NO" in inventory.groups


def test_strict_false_tolerates_bad_compose(lab, tmp_path):
    inventory, _ = run(lab, tmp_path, compose={"x": "undefined_thing + 1"}, strict=False)
    assert "x" not in hv(inventory, "lab-0001")
    with pytest.raises(AnsibleError, match="Could not set x"):
        run(lab, tmp_path, compose={"x": "undefined_thing + 1"}, strict=True)


# -- cache -------------------------------------------------------------------------


def test_cache_hit_and_refresh(lab, tmp_path):
    opts = {
        "cache": True,
        "cache_plugin": "jsonfile",  # in-process: no collection loader
        "cache_connection": str(tmp_path / "cache"),
        "cache_timeout": 600,
    }
    inventory, _ = run(lab, tmp_path, **opts)
    assert len(inventory.hosts) == 56
    calls = len(lab.state.requests)
    assert calls == 3
    cached = list((tmp_path / "cache").iterdir())
    assert cached
    assert "lab-key" not in cached[0].read_text()
    lab.state.add_instance(make_instance(1, label="newcomer"))

    inventory, _ = run(lab, tmp_path, use_cache=True, **opts)  # cache hit: no API call
    assert len(lab.state.requests) == calls
    assert "newcomer" not in inventory.hosts

    inventory, _ = run(lab, tmp_path, use_cache=False, **opts)  # --flush-cache / refresh_inventory
    assert len(lab.state.requests) == calls + 3
    assert "newcomer" in inventory.hosts
    inventory, _ = run(lab, tmp_path, use_cache=True, **opts)  # refreshed cache is used
    assert "newcomer" in inventory.hosts
    assert len(lab.state.requests) == calls + 3


def test_cache_off_always_calls_the_api(lab, tmp_path):
    run(lab, tmp_path, use_cache=False)
    run(lab, tmp_path)
    assert len(lab.state.requests) == 6


# -- errors -------------------------------------------------------------------------


def _error(lab, tmp_path, **options) -> str:
    with pytest.raises(AnsibleParserError) as err:
        run(lab, tmp_path, **options)
    message = str(err.value)
    assert "lab-key" not in message
    assert "Traceback" not in message
    return message


def test_bad_key(lab, tmp_path):
    assert "rejected the API key (401" in _error(lab, tmp_path, api_key="wrong-key")


def test_forbidden(lab, tmp_path):
    lab.state.add_fault(Fault(status=403, path_prefix="/api/v1/instances/"))
    assert "403 Forbidden" in _error(lab, tmp_path)


def test_gone(lab, tmp_path):
    lab.state.add_fault(Fault(status=410, path_prefix="/api/v1/instances/"))
    assert "410 Gone" in _error(lab, tmp_path)


def test_rate_limited_after_retries(lab, tmp_path):
    lab.state.add_fault(Fault(status=429, count=10, path_prefix="/api/v1/"))
    message = _error(lab, tmp_path, retries=2, retry_backoff=0.01)
    assert "rate limit (429" in message
    assert len(lab.state.requests) == 3


def test_rate_limit_recovers_with_retry_after(lab, tmp_path):
    lab.state.add_fault(Fault(status=429, count=1, path_prefix="/api/v1/", retry_after="0"))
    lab.state.add_fault(Fault(status=503, count=1, path_prefix="/api/v1/"))
    inventory, _ = run(lab, tmp_path, retries=3, retry_backoff=0.01)
    assert len(inventory.hosts) == 56


def test_network_failure(lab, tmp_path):
    message = _error(lab, tmp_path, api_url="http://127.0.0.1:9", timeout=2)
    assert "cannot reach vast.ai at http://127.0.0.1:9" in message


def test_no_key_anywhere(lab, tmp_path):
    path = tmp_path / "nokey.vastai.yml"
    path.write_text(yaml.safe_dump({"plugin": PLUGIN, "api_url": lab.url}))
    with pytest.raises(AnsibleParserError, match=r"no vast\.ai API key"):
        inventory_loader.get(PLUGIN).parse(InventoryData(), DataLoader(), str(path))


def test_container_secrets_stay_out_of_hostvars_and_cache(lab, tmp_path):
    row = make_instance(1, label="secretive")
    row["extra_env"] = [["HF_TOKEN", "hf_very_secret"]]
    row["jupyter_token"] = "jt_very_secret"
    lab.state.add_instance(row)
    inventory, _ = run(
        lab,
        tmp_path,
        cache=True,
        cache_plugin="jsonfile",
        cache_connection=str(tmp_path / "cache"),
        hostname="label ~ (extra_env | default('') | string)",
    )
    assert "secretive" in inventory.hosts  # extra_env is not even visible to templates
    dumped = json.dumps(hv(inventory, "secretive"), default=str)
    cached = "".join(p.read_text() for p in (tmp_path / "cache").iterdir())
    for text in (dumped, cached):
        assert "very_secret" not in text
