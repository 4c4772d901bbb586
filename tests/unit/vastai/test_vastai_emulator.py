"""The vast.ai API emulator (lab/src/vastllm_lab/vastai): state logic and CLI."""

from __future__ import annotations

import json

import pytest

from vastllm_lab.vastai import cli
from vastllm_lab.vastai.fixtures import generate_instances, make_instance
from vastllm_lab.vastai.query import decode_token, encode_token
from vastllm_lab.vastai.state import Fault, LabState

AUTH = "Bearer lab-key"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _state(**kw):
    kw.setdefault("instances", generate_instances(60))
    kw.setdefault("readonly_keys", ["ro"])
    return LabState(**kw)


def _get(state, path, query=None, auth=AUTH):
    return state.handle("GET", path, query or {}, None, auth)


def test_tokens_round_trip_and_reject_garbage():
    assert decode_token(encode_token(9000024)) == 9000024
    assert decode_token("%%%") is None
    assert decode_token("e30") is None  # "{}"


def test_v1_listing_pages_of_25_with_next_token():
    state = _state()
    status, _, body = _get(state, "/api/v1/instances/", {"limit": "25"})
    assert status == 200
    assert len(body["instances"]) == 25
    assert body["total_instances"] == 60
    seen = [r["id"] for r in body["instances"]]
    token = body["next_token"]
    while token:
        _, _, body = _get(state, "/api/v1/instances/", {"after_token": token})
        seen += [r["id"] for r in body["instances"]]
        token = body["next_token"]
    assert len(seen) == len(set(seen)) == 60
    assert seen == sorted(seen)


def test_v1_listing_caps_limit_and_filters():
    state = _state()
    _, _, body = _get(state, "/api/v1/instances/", {"limit": "500"})
    assert len(body["instances"]) == 25
    flt = json.dumps({"actual_status": {"eq": "exited"}})
    _, _, body = _get(state, "/api/v1/instances/", {"select_filters": flt})
    assert body["instances"]
    assert all(r["actual_status"] == "exited" for r in body["instances"])
    assert all(r["ports"] == {} for r in body["instances"])


@pytest.mark.parametrize(
    "query",
    [
        {"after_token": "garbage!"},
        {"limit": "x"},
        {"select_filters": json.dumps({"label": {"like": "x"}})},
        {"select_filters": "not json"},
    ],
)
def test_v1_listing_bad_requests(query):
    status, _, body = _get(_state(), "/api/v1/instances/", query)
    assert status == 400
    assert body["success"] is False


def test_v0_list_is_gone():
    status, _, body = _get(_state(), "/api/v0/instances/")
    assert status == 410
    assert "v1" in body["msg"]


def test_auth_errors():
    state = _state()
    assert _get(state, "/api/v1/instances/", auth=None)[0] == 401
    assert _get(state, "/api/v1/instances/", auth="Bearer nope")[0] == 401
    assert _get(state, "/api/v1/instances/", auth="Bearer ro")[0] == 200
    status, _, _ = state.handle("DELETE", "/api/v0/instances/9000000/", {}, {}, "Bearer ro")
    assert status == 403
    assert 9000000 in state.instances


def test_faults_with_and_without_retry_after():
    state = _state()
    state.add_fault(Fault(status=429, count=2, path_prefix="/api/v1/", retry_after="1"))
    state.add_fault(Fault(status=429, count=1, path_prefix="/api/v1/"))
    first = _get(state, "/api/v1/instances/")
    second = _get(state, "/api/v1/instances/")
    third = _get(state, "/api/v1/instances/")
    fourth = _get(state, "/api/v1/instances/")
    assert (first[0], first[1]) == (429, {"Retry-After": "1"})
    assert (second[0], second[1]) == (429, {"Retry-After": "1"})
    assert (third[0], third[1]) == (429, {})
    assert fourth[0] == 200


def test_create_goes_loading_then_running_with_ports_as_strings():
    clock = Clock()
    state = _state(instances=[], loading_delay=5.0, clock=clock)
    _, _, offers = state.handle(
        "POST", "/api/v0/bundles/", {}, {"order": [["dph_total", "asc"]]}, AUTH
    )
    offer = offers["offers"][0]
    body = {"image": "img:1", "label": "x", "disk": 20, "env": {"-p 8000:8000": "1", "A": "b"}}
    status, _, created = state.handle("PUT", f"/api/v0/asks/{offer['id']}/", {}, body, AUTH)
    assert status == 200
    assert created["success"] is True
    new_id = created["new_contract"]
    _, _, got = _get(state, f"/api/v0/instances/{new_id}/")
    assert got["instances"]["actual_status"] == "loading"
    assert got["instances"]["ports"] == {}
    assert got["instances"]["extra_env"] == [["A", "b"]]
    clock.now += 5.0
    _, _, got = _get(state, f"/api/v0/instances/{new_id}/")
    inst = got["instances"]
    assert inst["actual_status"] == "running"
    assert isinstance(inst["ports"]["22/tcp"][0]["HostPort"], str)
    assert isinstance(inst["ports"]["8000/tcp"][0]["HostPort"], str)
    assert inst["label"] == "x"
    assert inst["dph_total"] == offer["dph_total"]
    # the offer is gone from the market: 404, as documented
    status, _, again = state.handle("PUT", f"/api/v0/asks/{offer['id']}/", {}, body, AUTH)
    assert status == 404
    assert "no_such_ask" in again["msg"]
    assert again["ask_id"] == offer["id"]


def test_create_needs_image_and_enough_price():
    state = _state(instances=[])
    offer = next(iter(state.offers.values()))
    path = f"/api/v0/asks/{offer['id']}/"
    assert state.handle("PUT", path, {}, {"label": "x"}, AUTH)[0] == 400
    low = {"image": "i", "price": offer["dph_total"] / 2}
    assert state.handle("PUT", path, {}, low, AUTH)[2]["error"] == "price_too_low"


def test_ssh_port_option_makes_rented_instances_reachable_on_loopback():
    clock = Clock()
    state = _state(instances=[], loading_delay=0.0, ssh_port=2222, clock=clock)
    offer_id = next(iter(state.offers))
    _, _, created = state.handle("PUT", f"/api/v0/asks/{offer_id}/", {}, {"image": "i"}, AUTH)
    _, _, got = _get(state, f"/api/v0/instances/{created['new_contract']}/")
    inst = got["instances"]
    assert inst["public_ipaddr"] == "127.0.0.1"
    assert inst["ports"]["22/tcp"][0]["HostPort"] == "2222"
    assert (inst["ssh_host"], inst["ssh_port"]) == ("127.0.0.1", 2222)


def test_stop_start_label_destroy():
    clock = Clock()
    state = _state(instances=[make_instance(5, label="a")], loading_delay=1.0, clock=clock)
    path = "/api/v0/instances/5/"
    assert state.handle("PUT", path, {}, {"state": "stopped"}, AUTH)[0] == 200
    inst = _get(state, path)[2]["instances"]
    assert (inst["actual_status"], inst["intended_status"], inst["ports"]) == (
        "exited",
        "stopped",
        {},
    )
    state.handle("PUT", path, {}, {"state": "running"}, AUTH)
    assert _get(state, path)[2]["instances"]["actual_status"] == "loading"
    clock.now += 1.0
    assert _get(state, path)[2]["instances"]["actual_status"] == "running"
    state.handle("PUT", path, {}, {"label": "b"}, AUTH)
    assert _get(state, path)[2]["instances"]["label"] == "b"
    assert state.handle("PUT", path, {}, {"state": "paused"}, AUTH)[0] == 400
    assert state.handle("PUT", path, {}, {}, AUTH)[0] == 400
    assert state.handle("DELETE", path, {}, {}, AUTH)[0] == 200
    assert _get(state, path)[0] == 404
    assert state.handle("DELETE", path, {}, {}, AUTH)[0] == 404


def test_attach_ssh_key_validates_the_key():
    state = _state(instances=[make_instance(5)])
    path = "/api/v0/instances/5/ssh/"
    assert state.handle("POST", path, {}, {"ssh_key": "not a key"}, AUTH)[0] == 400
    assert state.handle("POST", path, {}, {"ssh_key": "ssh-ed25519 AAAA x"}, AUTH)[0] == 200
    assert state.ssh_keys[5] == ["ssh-ed25519 AAAA x"]
    assert (
        state.handle("POST", "/api/v0/instances/6/ssh/", {}, {"ssh_key": "ssh-rsa A"}, AUTH)[0]
        == 404
    )


def test_offer_search_filters_and_orders():
    state = _state(instances=[])
    q = {"gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"eq": 1}, "order": [["dph_total", "asc"]]}
    _, _, body = state.handle("POST", "/api/v0/bundles/", {}, q, AUTH)
    prices = [o["dph_total"] for o in body["offers"]]
    assert prices
    assert prices == sorted(prices)
    assert {o["gpu_name"] for o in body["offers"]} == {"RTX 4090"}
    bad = state.handle("POST", "/api/v0/bundles/", {}, {"gpu_name": "RTX 4090"}, AUTH)
    assert bad[0] == 400


def test_seed_instances_keep_their_fields_and_lose_ports_unless_running():
    state = _state(
        instances=[
            {
                "id": 1,
                "label": "lab",
                "public_ipaddr": "127.0.0.1",
                "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "2201"}]},
            },
            {
                "id": 2,
                "actual_status": "exited",
                "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "2202"}]},
            },
        ]
    )
    one = _get(state, "/api/v0/instances/1/")[2]["instances"]
    two = _get(state, "/api/v0/instances/2/")[2]["instances"]
    assert one["ports"]["22/tcp"][0]["HostPort"] == "2201"
    assert one["gpu_name"]  # filled with a realistic default
    assert two["ports"] == {}


def test_unknown_routes_are_404():
    assert _get(_state(), "/api/v0/nothing/")[0] == 404
    assert _get(_state(), "/elsewhere")[0] == 404


# -- CLI -----------------------------------------------------------------------------------


def test_cli_seed_errors(tmp_path, capsys):
    assert cli.main(["serve", "--seed", str(tmp_path / "missing.json")]) == 2
    assert "cannot read seed file" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli.main(["serve", "--seed", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"label": "no id"}]))
    assert cli.main(["serve", "--seed", str(wrong)]) == 2
    assert "with an 'id'" in capsys.readouterr().err


def test_cli_rejects_bad_arguments(capsys):
    assert cli.main(["serve", "--instances", "-3"]) == 2
    assert "--instances" in capsys.readouterr().err
    assert cli.main(["nope"]) == 2


def test_cli_load_seed_accepts_wrapped_list(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"instances": [{"id": 3}]}))
    assert cli.load_seed(str(seed)) == [{"id": 3}]


def test_fault_after_processing_loses_the_reply_only():
    state = _state(instances=[])
    offer_id = next(iter(state.offers))
    state.add_fault(Fault(status=502, path_prefix="/api/v0/asks/", after=True))
    status, _, _ = state.handle("PUT", f"/api/v0/asks/{offer_id}/", {}, {"image": "i"}, AUTH)
    assert status == 502
    assert len(state.instances) == 1  # the rental happened
