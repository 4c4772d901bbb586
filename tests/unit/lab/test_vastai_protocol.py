"""The vast.ai double speaks the real protocol: numeric filters as the CLI sends them, the v1
listing's documented parameters, 404 for a gone offer, Docker-flag env, instance-scoped keys and
the price fields spend is computed from. Literal inputs; no sockets."""

from __future__ import annotations

import json

import pytest

from vastllm_lab.vastai.dockerenv import EnvError, normalize_env, parse_docker_flags
from vastllm_lab.vastai.fixtures import make_instance
from vastllm_lab.vastai.query import (
    coerce,
    compare_keys,
    decode_token_key,
    encode_token,
    filter_error,
    matches,
    page_limit,
    parse_order_by,
    query_offers,
    select_columns,
)
from vastllm_lab.vastai.state import LabState, scoped_call_allowed

AUTH = "Bearer lab-key"

# -- numeric filters (query.py) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "operand", "expected"),
    [
        (1, "1", 1.0),
        (0.35, "0.6", 0.6),
        (0.995, " 0.97 ", 0.97),
        (24564, "24000.0", 24000.0),
        (True, "true", True),
        (False, "False", False),
        ("RTX 4090", "1", "1"),  # a string column keeps a string operand
        (None, "1", "1"),  # nothing to compare with
        (1, "one", "one"),  # does not parse: left as is (and then matches nothing)
        (2, 2, 2),
        (4, ["1", "2"], [1.0, 2.0]),
    ],
)
def test_coerce_converts_to_the_column_type(column, operand, expected):
    got = coerce(column, operand)
    assert got == expected
    assert type(got) is type(expected)


def test_matches_with_operands_as_the_cli_sends_them():
    row = {"num_gpus": 1, "dph_total": 0.5476, "reliability": 0.981, "verified": True}
    assert matches(row, {"num_gpus": {"eq": "1"}})
    assert matches(row, {"dph_total": {"lt": "0.6"}})
    assert matches(row, {"reliability": {"gt": "0.97"}})
    assert matches(row, {"verified": {"eq": "true"}})
    assert matches(row, {"num_gpus": {"in": ["1", "2"]}})
    assert not matches(row, {"num_gpus": {"notin": ["1"]}})
    assert not matches(row, {"dph_total": {"gte": "0.6"}})
    assert not matches(row, {"num_gpus": {"eq": "one"}})


def test_query_offers_with_string_numbers():
    offers = [
        {"id": 1, "num_gpus": 1, "dph_total": 0.3, "geolocation": "Texas, US"},
        {"id": 2, "num_gpus": 2, "dph_total": 0.5, "geolocation": "Quebec, CA"},
        {"id": 3, "num_gpus": 1, "dph_total": 0.9, "geolocation": "Oregon, US"},
    ]
    q = {"num_gpus": {"eq": "1"}, "dph_total": {"lt": "0.6"}, "order": [["dph_total", "asc"]]}
    assert [o["id"] for o in query_offers(offers, q)] == [1]


# -- v1 listing parameters ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit"), [(None, 25), ("", 25), ("10", 10), ("500", 25), ("0", 5), ("-3", 5)]
)
def test_page_limit_as_documented(text, limit):
    assert page_limit(text) == limit


def test_page_limit_rejects_garbage():
    with pytest.raises(ValueError, match="invalid literal"):
        page_limit("x")


def test_filter_error_names_a_computed_field():
    problem = filter_error({"dph_total": {"lte": 1}}, {"dph_total", "num_gpus"})
    assert problem is not None
    assert "'dph_total'" in problem
    assert filter_error({"actual_status": {"eq": "running"}}, {"dph_total"}) is None


def test_parse_order_by():
    cols = {"id", "start_date", "label", "dph_total"}
    assert parse_order_by(None, cols) == ([("id", False)], None)
    spec = [{"col": "start_date", "dir": "desc"}, {"col": "label", "dir": "sideways"}]
    assert parse_order_by(spec, cols) == (
        [("start_date", True), ("label", False), ("id", False)],
        None,
    )
    assert parse_order_by([{"col": "id", "dir": "desc"}], cols) == ([("id", True)], None)
    keys, problem = parse_order_by([{"col": "nope"}], cols)
    assert (keys, "'nope'" in str(problem)) == ([], True)
    keys, problem = parse_order_by([{"col": "dph_total"}], cols, {"dph_total"})
    assert (keys, "'dph_total'" in str(problem)) == ([], True)
    assert parse_order_by("id", cols)[1] is not None


def test_compare_keys_puts_none_last_and_honours_direction():
    assert compare_keys([1, 5], [2, 1], [False, False]) == -1
    assert compare_keys([1, 5], [2, 1], [True, False]) == 1
    assert compare_keys([None], [1], [False]) == 1
    assert compare_keys(["a", 3], ["a", 3], [False, False]) == 0


def test_select_columns():
    row = {"id": 1, "label": "a", "dph_total": 0.3}
    assert select_columns(row, None) == row
    assert select_columns(row, ["*"]) == row
    assert select_columns(row, ["id", "nope"]) == {"id": 1, "nope": None}


def test_tokens_carry_the_sort_key():
    assert decode_token_key(encode_token(7, [3.5, 7])) == (7, [3.5, 7])
    assert decode_token_key(encode_token(7)) == (7, None)
    assert decode_token_key("%%%") is None


def _state(**kw):
    kw.setdefault(
        "instances",
        [
            make_instance(1, label="b", dph_total=0.9, start_date=300.0),
            make_instance(2, label="a", dph_total=0.2, start_date=100.0, status="exited"),
            make_instance(3, label="a", dph_total=0.5, start_date=200.0),
        ],
    )
    return LabState(**kw)


def _list(state, **query):
    q = {k: v if isinstance(v, str) else json.dumps(v) for k, v in query.items()}
    return state.handle("GET", "/api/v1/instances/", q, None, AUTH)


def test_listing_refuses_a_computed_filter_with_400_naming_it():
    status, _, body = _list(_state(), select_filters={"dph_total": {"lte": 1}})
    assert status == 400
    assert "dph_total" in body["msg"]
    status, _, body = _list(_state(), select_filters={"num_gpus": {"gte": 2}})
    assert (status, "num_gpus" in body["msg"]) == (400, True)
    status, _, body = _list(_state(), select_filters={"no_such_column": {"eq": 1}})
    assert (status, "no_such_column" in body["msg"]) == (400, True)


def test_listing_filters_with_string_numbers():
    _, _, body = _list(_state(), select_filters={"id": {"gte": "2"}})
    assert [r["id"] for r in body["instances"]] == [2, 3]


def test_listing_order_by_and_keyset_pages():
    state = _state()
    order = [{"col": "start_date", "dir": "desc"}]
    status, _, body = _list(state, order_by=order, limit="2")
    assert status == 200
    assert [r["id"] for r in body["instances"]] == [1, 3]
    assert body["instances_found"] == 2
    assert body["label_counts"] == {"a": 2, "b": 1}
    _, _, body = _list(state, order_by=order, limit="2", after_token=body["next_token"])
    assert [r["id"] for r in body["instances"]] == [2]
    assert body["next_token"] is None
    assert _list(state, order_by=[{"col": "dph_total"}])[0] == 400
    assert _list(state, order_by=[{"col": "bogus"}])[0] == 400


def test_listing_limit_zero_is_five_and_select_cols():
    state = LabState(instances=[make_instance(i) for i in range(1, 9)])
    _, _, body = _list(state, limit="0")
    assert len(body["instances"]) == 5
    _, _, body = _list(state, limit="-1", select_cols=["id", "label", "nope"])
    assert body["instances"][0] == {"id": 1, "label": None, "nope": None}
    assert _list(state, select_cols={"id": 1})[0] == 400


def test_bad_token_is_invalid_token():
    status, _, body = _list(_state(), after_token="garbage!")
    assert (status, body["error"]) == (400, "invalid_token")


# -- create ---------------------------------------------------------------------------------


def test_create_on_a_gone_offer_is_404_as_documented():
    state = _state(instances=[])
    status, _, body = state.handle("PUT", "/api/v0/asks/1/", {}, {"image": "i"}, AUTH)
    assert status == 404
    assert body["ask_id"] == 1
    assert "no_such_ask" in body["msg"]


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ("-p 8000:8000 -e K=V", {"-p 8000:8000": "1", "K": "V"}),
        ("-e A=b=c -e 'M=a b' -p 9000:9000/udp", {"A": "b=c", "M": "a b", "-p 9000:9000/udp": "1"}),
        ("-h host -e BAD -p nope --env=X=1", {"X": "1"}),
        ("", {}),
    ],
)
def test_parse_docker_flags(text, env):
    assert parse_docker_flags(text) == env


def test_normalize_env():
    assert normalize_env(None) == {}
    assert normalize_env({"-p 8000:8000": "1", "N": 2}) == {"-p 8000:8000": "1", "N": "2"}
    with pytest.raises(EnvError):
        normalize_env(["-p", "8000"])
    with pytest.raises(EnvError):
        normalize_env("-e 'unbalanced")


def test_create_reads_env_given_as_docker_flags():
    state = _state(instances=[], loading_delay=0.0)
    offer_id = next(iter(state.offers))
    body = {"image": "i", "env": "-p 8000:8000 -e OLLAMA_HOST=0.0.0.0 -e K=V"}
    status, _, created = state.handle("PUT", f"/api/v0/asks/{offer_id}/", {}, body, AUTH)
    assert status == 200
    _, _, got = state.handle("GET", f"/api/v0/instances/{created['new_contract']}/", {}, None, AUTH)
    inst = got["instances"]
    assert inst["extra_env"] == [["OLLAMA_HOST", "0.0.0.0"], ["K", "V"]]
    assert "8000/tcp" in inst["ports"]
    bad = state.handle("PUT", f"/api/v0/asks/{offer_id + 1}/", {}, {"image": "i", "env": 5}, AUTH)
    assert bad[0] == 400


def test_offer_search_type_follows_the_cli():
    state = _state(instances=[])
    for kind in ("on-demand", "ondemand", "bid", "reserved"):
        assert state.handle("POST", "/api/v0/bundles/", {}, {"type": kind}, AUTH)[0] == 200
    assert state.handle("POST", "/api/v0/bundles/", {}, {"type": "cheap"}, AUTH)[0] == 400


# -- instance-scoped keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "allowed"),
    [
        ("PUT", "/api/v0/instances/5/", {"state": "stopped"}, True),
        ("GET", "/api/v0/instances/5/", None, True),
        ("PUT", "/api/v0/instances/5/", {"state": "running"}, False),
        ("PUT", "/api/v0/instances/5/", {"state": "stopped", "label": "x"}, False),
        ("PUT", "/api/v0/instances/6/", {"state": "stopped"}, False),
        ("DELETE", "/api/v0/instances/5/", {}, False),
        ("GET", "/api/v1/instances/", None, False),
        ("POST", "/api/v0/instances/5/ssh/", {"ssh_key": "ssh-rsa A"}, False),
    ],
)
def test_scoped_call_allowed(method, path, body, allowed):
    assert scoped_call_allowed(5, method, path, body) is allowed


def test_scoped_key_stops_only_its_own_instance():
    state = LabState(
        instances=[make_instance(5), make_instance(6)], scoped_keys={5: "container-5-key"}
    )
    own = "Bearer container-5-key"
    assert state.scoped_key(5) == "container-5-key"
    env = state.container_env(5)
    assert (env["CONTAINER_ID"], env["CONTAINER_API_KEY"]) == ("5", "container-5-key")
    assert state.scoped_key(6).startswith("lab-container-")
    assert state.handle("GET", "/api/v0/instances/5/", {}, None, own)[0] == 200
    assert state.handle("GET", "/api/v0/instances/6/", {}, None, own)[0] == 403
    assert state.handle("GET", "/api/v1/instances/", {}, None, own)[0] == 403
    stop = {"state": "stopped"}
    assert state.handle("PUT", "/api/v0/instances/6/", {}, stop, own)[0] == 403
    assert state.handle("PUT", "/api/v0/instances/5/", {}, {"state": "running"}, own)[0] == 403
    assert state.handle("DELETE", "/api/v0/instances/5/", {}, {}, own)[0] == 403
    assert state.instances[6]["actual_status"] == "running"
    assert state.handle("PUT", "/api/v0/instances/5/", {}, stop, own)[0] == 200
    assert state.instances[5]["actual_status"] == "exited"
    assert state.stopped_by == {5: "container"}
    state.handle("PUT", "/api/v0/instances/6/", {}, stop, AUTH)
    assert state.stopped_by[6] == "account"
    assert state.handle("GET", "/api/v0/instances/5/", {}, None, "Bearer nope")[0] == 401
    # a destroyed instance's key is unknown from then on
    state.handle("DELETE", "/api/v0/instances/5/", {}, {}, AUTH)
    assert state.handle("GET", "/api/v0/instances/5/", {}, None, own)[0] == 401


def test_rented_instance_gets_a_key_and_prices_for_spend():
    state = LabState(instances=[], loading_delay=0.0, wall_clock=lambda: 1_750_000_000.0)
    offer = state.offers[30_000_000]
    created = state.handle("PUT", "/api/v0/asks/30000000/", {}, {"image": "i", "disk": 73}, AUTH)
    new_id = created[2]["new_contract"]
    key = state.container_env(new_id)["CONTAINER_API_KEY"]
    stop = {"state": "stopped"}
    assert state.handle("PUT", f"/api/v0/instances/{new_id}/", {}, stop, f"Bearer {key}")[0] == 200
    inst = state.handle("GET", f"/api/v0/instances/{new_id}/", {}, None, AUTH)[2]["instances"]
    assert inst["start_date"] == 1_750_000_000.0
    assert inst["dph_total"] == offer["dph_total"]
    assert inst["storage_cost"] == offer["storage_cost"]
    assert inst["storage_total_cost"] == pytest.approx(73 * offer["storage_cost"] / 730)
    assert {"inet_up_cost", "inet_down_cost"} <= inst.keys()
    assert "CONTAINER_API_KEY" not in json.dumps(inst)
    assert key not in json.dumps(inst)


def test_users_current_answers_the_cli_role_probe():
    status, _, body = _state().handle("GET", "/api/v0/users/current", {}, None, AUTH)
    assert (status, body["host_agreement_accepted"]) == (200, False)
