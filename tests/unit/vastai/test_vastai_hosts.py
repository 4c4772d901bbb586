"""What a vast.ai instance means for Ansible (plugins/module_utils/vastai_hosts.py), pure."""

from __future__ import annotations

import pytest
from ansible_collections.vastllm.stack.plugins.module_utils import vastai_hosts as hosts

# -- SSH endpoint and hostvars -------------------------------------------------------------


def _instance(**over):
    base = {
        "id": 42,
        "label": "box",
        "actual_status": "running",
        "intended_status": "running",
        "public_ipaddr": "203.0.113.5",
        "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "41234"}]},
        "ssh_host": "ssh4.vast.ai",
        "ssh_port": 30042,
        "image_runtype": "ssh_direc ssh_proxy",
        "gpu_name": "RTX 4090",
        "num_gpus": 1,
        "image_uuid": "img:1",
        "reliability2": 0.99,
    }
    base.update(over)
    return base


def test_direct_when_22_is_mapped():
    assert hosts.ssh_endpoint(_instance(), "auto") == ("203.0.113.5", 41234, "direct")
    assert hosts.ssh_endpoint(_instance(), "direct") == ("203.0.113.5", 41234, "direct")


def test_proxy_when_asked_or_not_mapped():
    assert hosts.ssh_endpoint(_instance(), "proxy") == ("ssh4.vast.ai", 30042, "proxy")
    assert hosts.ssh_endpoint(_instance(ports={}), "auto") == ("ssh4.vast.ai", 30042, "proxy")


def test_direct_only_gives_nothing_without_mapping():
    assert hosts.ssh_endpoint(_instance(ports={}), "direct") == (None, None, None)
    bad = _instance(ports={"22/tcp": [{"HostPort": "not-a-port"}]})
    assert hosts.ssh_endpoint(bad, "direct") == (None, None, None)
    assert hosts.ssh_endpoint(_instance(public_ipaddr=""), "direct") == (None, None, None)


def test_jupyter_images_use_proxy_port_plus_one():
    inst = _instance(ports={}, image_runtype="jupyter_direc ssh_direc ssh_proxy")
    assert hosts.ssh_endpoint(inst, "auto") == ("ssh4.vast.ai", 30043, "proxy")


def test_unknown_connect_mode_is_an_error():
    with pytest.raises(ValueError, match="connect_with"):
        hosts.ssh_endpoint(_instance(), "telnet")


def test_hostvars_shape_and_prefix():
    hv = hosts.instance_hostvars(_instance(), "vastai_", "auto")
    assert hv["ansible_host"] == "203.0.113.5"
    assert hv["ansible_port"] == 41234
    assert hv["ansible_user"] == "root"
    assert hv["vastai_id"] == 42
    assert hv["vastai_status"] == "running"
    assert hv["vastai_image"] == "img:1"
    assert hv["vastai_reliability"] == 0.99
    assert hv["vastai_ports"]["22/tcp"][0]["HostPort"] == "41234"
    assert hv["vastai_connect_with"] == "direct"
    other = hosts.instance_hostvars(_instance(), "v_", "proxy")
    assert other["v_id"] == 42
    assert not any(k.startswith("vastai_") for k in other)
    assert other["ansible_port"] == 30042


def test_hostvars_without_any_ssh_route_have_no_ansible_host():
    hv = hosts.instance_hostvars(_instance(ports={}, ssh_host=None, actual_status=None), "vastai_")
    assert "ansible_host" not in hv
    assert hv["vastai_status"] == "loading"
    assert hv["vastai_ports"] == {}


def test_instance_matches_filters():
    inst = _instance()
    assert hosts.instance_matches(inst, ["running"], ["bo*"], ["RTX_4090"])
    assert hosts.instance_matches(inst, [], [], [])
    assert not hosts.instance_matches(inst, ["exited"], [], [])
    assert not hosts.instance_matches(inst, [], ["vastllm-*"], [])
    assert not hosts.instance_matches(inst, [], [], ["A100*"])
    assert hosts.instance_matches(inst, [], [], ["RTX 40*"])
    assert not hosts.instance_matches(_instance(label=None), [], ["*x*"], [])


def test_default_hostname():
    assert hosts.default_hostname({"id": 7, "label": " box "}) == "box"
    assert hosts.default_hostname({"id": 7, "label": None}) == "7"
    assert hosts.default_hostname({"id": 7, "label": ""}) == "7"
