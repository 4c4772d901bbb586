"""Offer search query, client-side checks and selection (plugins/module_utils/vastai_offers.py)."""

from __future__ import annotations

import pytest


def _offer(**over):
    base = {
        "id": 1,
        "gpu_name": "RTX 4090",
        "num_gpus": 1,
        "gpu_ram": 24564,
        "disk_space": 200.0,
        "dph_total": 0.40,
        "reliability2": 0.99,
        "verified": True,
        "geolocation": "Texas, US",
        "rented": False,
    }
    base.update(over)
    return base


def _criteria(mod, **over):
    kw = {"max_dph": 0.5, "gpu_names": ("RTX_4090",), "min_gpu_ram_gb": 24.0, "min_disk_gb": 80.0}
    kw.update(over)
    return mod.OfferCriteria(**kw)


def test_query_carries_every_criterion(offers_mod):
    c = _criteria(offers_mod, min_reliability=0.98, extra_filters={"inet_down": {"gte": 500}})
    q = offers_mod.build_offer_query(c, 80)
    assert q["dph_total"] == {"lte": 0.5}
    assert q["gpu_name"] == {"eq": "RTX 4090"}
    assert q["num_gpus"] == {"eq": 1}
    assert q["gpu_ram"] == {"gte": 24000.0}
    assert q["disk_space"] == {"gte": 80.0}
    assert q["reliability"] == {"gte": 0.98}
    assert q["verified"] == {"eq": True}
    assert q["rentable"] == {"eq": True}
    assert q["inet_down"] == {"gte": 500}
    assert q["order"] == [["dph_total", "asc"]]
    assert q["allocated_storage"] == 80.0


def test_query_several_gpus_and_globs(offers_mod):
    q = offers_mod.build_offer_query(_criteria(offers_mod, gpu_names=("RTX_4090", "RTX 3090")), 10)
    assert q["gpu_name"] == {"in": ["RTX 4090", "RTX 3090"]}
    # a glob cannot be sent to the server: filtered client-side instead
    q = offers_mod.build_offer_query(_criteria(offers_mod, gpu_names=("A100*",)), 10)
    assert "gpu_name" not in q
    q = offers_mod.build_offer_query(_criteria(offers_mod, verified_only=False), 10)
    assert "verified" not in q


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"max_dph": 0}, "max_dph"),
        ({"max_dph": -1}, "max_dph"),
        ({"num_gpus": 0}, "num_gpus"),
        ({"min_reliability": 1.5}, "min_reliability"),
        ({"min_disk_gb": -1}, "min_disk"),
    ],
)
def test_invalid_criteria_are_refused(offers_mod, over, message):
    with pytest.raises(offers_mod.OfferError, match=message):
        offers_mod.build_offer_query(_criteria(offers_mod, **over), 10)


@pytest.mark.parametrize(
    ("over", "problem"),
    [
        ({"dph_total": 0.51}, "above max_dph"),
        ({"dph_total": None}, "no price"),
        ({"num_gpus": 2}, "2 GPUs"),
        ({"gpu_name": "RTX 3090"}, "not in"),
        ({"gpu_ram": 16000}, "GPU RAM"),
        ({"disk_space": 50.0}, "disk"),
        ({"verified": False}, "not verified"),
        ({"rented": True}, "already rented"),
    ],
)
def test_offer_problems_name_the_reason(offers_mod, over, problem):
    problems = offers_mod.offer_problems(_offer(**over), _criteria(offers_mod))
    assert any(problem in p for p in problems), problems


def test_acceptable_offer_has_no_problems(offers_mod):
    assert offers_mod.offer_problems(_offer(), _criteria(offers_mod)) == []


def test_reliability_and_region(offers_mod):
    c = _criteria(offers_mod, min_reliability=0.995, region="US")
    assert any("reliability" in p for p in offers_mod.offer_problems(_offer(), c))
    c = _criteria(offers_mod, region="de")
    assert any("region" in p for p in offers_mod.offer_problems(_offer(), c))
    assert offers_mod.offer_problems(_offer(geolocation="Bavaria, DE"), c) == []
    c = _criteria(offers_mod, region="Texas*")
    assert offers_mod.offer_problems(_offer(), c) == []


def test_unverified_offer_accepted_when_not_required(offers_mod):
    offer = _offer(verified=None, verification="unverified")
    c = _criteria(offers_mod)
    assert "machine not verified" in offers_mod.offer_problems(offer, c)
    c = _criteria(offers_mod, verified_only=False)
    assert offers_mod.offer_problems(offer, c) == []


def test_select_cheapest_then_most_reliable_then_lowest_id(offers_mod):
    offers = [
        _offer(id=1, dph_total=0.45),
        _offer(id=2, dph_total=0.30, reliability2=0.95),
        _offer(id=3, dph_total=0.30, reliability2=0.99),
        _offer(id=4, dph_total=0.30, reliability2=0.99),
        _offer(id=5, dph_total=0.10, gpu_name="RTX 3090"),  # cheapest but wrong GPU
        _offer(id=6, dph_total=0.60),  # above the guard
    ]
    chosen = offers_mod.select_offer(offers, _criteria(offers_mod))
    assert chosen["id"] == 3


def test_select_none_when_everything_is_too_expensive(offers_mod):
    offers = [_offer(id=1, dph_total=0.9), _offer(id=2, dph_total=0.7)]
    assert offers_mod.select_offer(offers, _criteria(offers_mod)) is None
    assert offers_mod.select_offer([], _criteria(offers_mod)) is None


def test_describe_offer(offers_mod):
    text = offers_mod.describe_offer(_offer(id=9, dph_total=0.4))
    assert text == "offer 9: 1x RTX 4090 in Texas, US at $0.4000/h"


def test_port_env(offers_mod):
    assert offers_mod.port_env([8000, "9000/udp", "7000/tcp"]) == {
        "-p 8000:8000": "1",
        "-p 9000:9000/udp": "1",
        "-p 7000:7000": "1",
    }
    for bad in ("0", "70000", "abc", "80/sctp"):
        with pytest.raises(offers_mod.OfferError):
            offers_mod.port_env([bad])


def test_create_payload(offers_mod):
    body = offers_mod.build_create_payload(
        image="img:1",
        disk_gb=40,
        label="vastllm-1",
        env={"A": 1},
        ports=[8000],
        onstart="echo hi",
    )
    assert body["image"] == "img:1"
    assert body["disk"] == 40.0
    assert body["label"] == "vastllm-1"
    assert body["env"] == {"A": "1", "-p 8000:8000": "1"}
    assert body["onstart"] == "echo hi"
    assert body["runtype"] == "ssh_direc ssh_proxy"
    proxy_only = offers_mod.build_create_payload(image="i", disk_gb=1, label="l", ssh_direct=False)
    assert proxy_only["runtype"] == "ssh_proxy"
    assert proxy_only["onstart"] is None


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"image": ""}, "image"),
        ({"disk_gb": 0}, "disk"),
        ({"env": {"BAD NAME": "x"}}, "invalid"),
    ],
)
def test_create_payload_errors(offers_mod, kw, message):
    args = {"image": "i", "disk_gb": 10, "label": "l"}
    args.update(kw)
    with pytest.raises(offers_mod.OfferError, match=message):
        offers_mod.build_create_payload(**args)
