"""The CLI's pure logic with literal inputs: prices, offer choice, spend, status rows and table,
metrics, tunnel decisions, progress lines, redaction, settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from vastllm.cli import status as sv
from vastllm.cli import tunnel
from vastllm.cli.config import CliError, paths_from_env, settings_from
from vastllm.cli.pricing import Wanted, choose_offer, hourly_cost, offer_price, spend
from vastllm.cli.progress import Progress, redact, redact_in_place
from vastllm.cli.remote import parse_probe, proxy_window, served_context


def offer(i, dph, base=None, storage=0.0, down=0.0, up=0.0, **kw):
    row = {"id": i, "gpu_name": "RTX 4090", "num_gpus": 1, "gpu_ram": 24000, "disk_space": 200,
           "reliability2": 0.99, "verified": True, "geolocation": "Texas, US", "rentable": True,
           "rented": False, "dph_total": dph, "storage_cost": storage, "inet_down_cost": down,
           "inet_up_cost": up}  # fmt: skip
    if base is not None:
        row["dph_base"] = base
    row.update(kw)
    return row


def test_offer_price_parts():
    price = offer_price(offer(1, 0.40, base=0.30, storage=0.146, down=0.002, up=0.004), 50)
    assert price.gpu == pytest.approx(0.30)
    assert price.storage == pytest.approx(0.146 * 50 / 730)  # 0.01
    assert price.bandwidth == pytest.approx(0.002 * 2 + 0.004 * 0.5)  # 0.006
    assert price.total == pytest.approx(0.316)


def test_offer_price_without_base_uses_dph_total():
    assert offer_price(offer(1, 0.5), 10, 0, 0).total == pytest.approx(0.5)


def test_choose_offer_by_total_not_gpu_price():
    cheap_gpu_dear_disk = offer(1, 0.30, base=0.30, storage=7.3)  # disk 80 GB -> 0.80/h
    dearer_gpu = offer(2, 0.35, base=0.35, storage=0.1)
    choice = choose_offer([cheap_gpu_dear_disk, dearer_gpu], Wanted(max_price=0.5, disk_gb=80))
    assert choice.offer is not None
    assert choice.offer["id"] == 2
    assert choice.price is not None
    assert choice.price.total == pytest.approx(0.35 + 8 / 730)


def test_choose_offer_cap_applies_to_total():
    # GPU alone 0.49 fits 0.50, the total (0.49 + 0.0219 disk) does not
    choice = choose_offer([offer(1, 0.49, base=0.49, storage=0.2)], Wanted(max_price=0.5))
    assert choice.offer is None
    assert choice.over_cap == 1
    assert choice.cheapest_total == pytest.approx(0.49 + 0.2 * 80 / 730)


def test_choose_offer_filters_criteria():
    small = offer(1, 0.1, gpu_ram=8000)
    other_gpu = offer(2, 0.1, gpu_name="A100 PCIE")
    good = offer(3, 0.2)
    wanted = Wanted(max_price=1, gpu_names=("RTX_4090",), min_vram_gb=24, disk_gb=80)
    assert choose_offer([small, other_gpu, good], wanted).offer["id"] == 3  # type: ignore[index]


def test_choose_offer_needs_a_cap():
    with pytest.raises(ValueError, match="cap"):
        choose_offer([offer(1, 0.1)], Wanted(max_price=0))


def test_spend_and_hourly_cost():
    assert spend(1000.0, 1000.0 + 5400, 0.4) == (1.5, pytest.approx(0.6))
    assert spend(None, 5000, 0.4) == (0.0, 0.0)
    assert spend(9000, 5000, 0.4) == (0.0, 0.0)
    assert hourly_cost({"dph_total": 0.4, "storage_total_cost": 0.02}, "running") == 0.4
    assert hourly_cost({"dph_total": 0.4, "storage_total_cost": 0.02}, "stopped") == 0.02
    assert hourly_cost({"storage_cost": 0.146, "disk_space": 50}, "stopped") == pytest.approx(0.01)


METRICS = """# HELP vastllm_requests_total x
vastllm_requests_total{route="messages",status="200"} 7
vastllm_requests_total{route="messages",status="500"} 1
vastllm_requests_total{route="count_tokens",status="200"} 2
vastllm_requests_total{route="health",status="200"} 40
vastllm_cache_requests_total{result="hit"} 3
vastllm_cache_requests_total{result="miss"} 5
vastllm_cache_hit_ratio 0.375000
"""


def test_parse_metrics():
    assert sv.parse_metrics(METRICS) == {"requests": 9, "cache_hit_ratio": 0.375}
    assert sv.parse_metrics('vastllm_cache_requests_total{result="hit"} 1\n'
                            'vastllm_cache_requests_total{result="miss"} 3\n') == {
        "requests": 0, "cache_hit_ratio": 0.25}  # fmt: skip


INSTANCE = {"id": 7, "label": "vastllm-1", "actual_status": "running", "gpu_name": "RTX 4090",
            "num_gpus": 1, "dph_total": 0.4, "start_date": 1000.0}  # fmt: skip
MONITOR = {
    "uptime": {"percent": 99.31},
    "idle": {"enabled": True, "minutes_since_last_request": 14.2, "minutes_until_stop": 45.8},
}


def test_status_row_and_table():
    row = sv.status_row(INSTANCE, 1000.0 + 7200, health={"status": "ok", "model": {"name": "m:1"}},
                        metrics={"requests": 10, "cache_hit_ratio": 0.375}, monitor=MONITOR,
                        context_window=65536, tunnel="up", local_port=8000)  # fmt: skip
    assert row["spent"] == 0.8
    assert row["hours"] == 2.0
    assert row["dph"] == 0.4
    assert row["model"] == "m:1"
    assert row["uptime_percent"] == 99.31
    table = sv.render_table([row]).splitlines()
    assert table[0].split()[:4] == ["LABEL", "STATE", "GPU", "$/H"]
    for cell in ("vastllm-1", "running", "1x RTX 4090", "$0.400", "2h00m", "$0.80", "ok", "m:1",
                 "65536", "38%", "10", "99.3%", "idle 14m, stop in 46m", "up :8000"):  # fmt: skip
        assert cell in table[1]


def test_spending_line_and_warnings():
    busy = sv.status_row(INSTANCE, 1000.0 + 3600, monitor=MONITOR)
    idle_mon = {
        "idle": {"enabled": True, "minutes_since_last_request": 50, "minutes_until_stop": 10}
    }
    idle = sv.status_row({**INSTANCE, "label": "vastllm-2"}, 1000.0 + 3600, monitor=idle_mon)
    stopped = sv.status_row({**INSTANCE, "label": "vastllm-3", "actual_status": "stopped",
                             "storage_total_cost": 0.02}, 1000.0 + 3600)  # fmt: skip
    rows = [busy, idle, stopped]
    assert sv.spending_line(rows, "vastllm") == (
        "spending (vastllm*): 3 instance(s), 2 running, $0.820/h now, $1.20 so far"
    )
    warns = sv.warnings(rows, 30)
    assert len(warns) == 1
    assert warns[0].startswith("warning: vastllm-2 runs at $0.400/h")
    unused = sv.status_row(
        INSTANCE, 1000.0 + 3600, metrics={"requests": 0, "cache_hit_ratio": None}
    )
    assert "served no request" in sv.warnings([unused], 30)[0]


def test_tunnel_decisions():
    target = {"host": "1.2.3.4", "port": 22, "user": "root", "key_file": "/k"}
    wanted = tunnel.wanted_spec("a", target, 8000, 8000, 0)
    assert tunnel.connect_decision(None, False, wanted) == "start"
    assert tunnel.connect_decision(wanted, False, wanted) == "start"
    assert tunnel.connect_decision(wanted, True, wanted) == "keep"
    other = tunnel.wanted_spec("a", target, 8001, 8000, 0)
    assert tunnel.connect_decision(other, True, wanted) == "restart"
    moved = tunnel.wanted_spec("a", {**target, "port": 2222}, 8000, 8000, 0)
    assert tunnel.connect_decision(moved, True, wanted) == "restart"
    assert [tunnel.backoff(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert tunnel.tunnel_state(None, False, False) == "down"
    assert tunnel.tunnel_state({"status": "up"}, False, True) == "stale"
    assert tunnel.tunnel_state({"status": "up"}, True, True) == "up"
    assert tunnel.tunnel_state({"status": "reconnecting"}, True, False) == "reconnecting"


def test_ssh_argv():
    spec = tunnel.wanted_spec("a", {"host": "h", "port": 2222, "user": "root", "key_file": "/k",
                                    "known_hosts": "/kh"}, 8000, 8000, 11434)  # fmt: skip
    argv = tunnel.ssh_argv(spec)
    assert argv[:2] == ["ssh", "-N"]
    assert argv[-1] == "root@h"
    assert "127.0.0.1:8000:127.0.0.1:8000" in argv
    assert "127.0.0.1:11434:127.0.0.1:11434" in argv
    for opt in ("ServerAliveInterval=15", "ServerAliveCountMax=3", "ExitOnForwardFailure=yes",
                "BatchMode=yes", "UserKnownHostsFile=/kh"):  # fmt: skip
        assert opt in argv


def test_progress_lines():
    p = Progress()
    assert p.feed({"event": "playbook_on_play_start", "event_data": {"name": "Serve"}}) == [
        "== Serve"
    ]
    p.feed(
        {
            "event": "playbook_on_task_start",
            "event_data": {"name": "vastllm.stack.model : Pull | progress", "role": "model"},
        }
    )
    line = p.feed(
        {
            "event": "runner_item_on_ok",
            "event_data": {
                "host": "h1",
                "res": {"_ansible_item_label": "pulled 4.2 GB of 19 GB at 55.1 MB/s"},
            },
        }
    )
    assert line == ["   h1           pull     pulled 4.2 GB of 19 GB at 55.1 MB/s"]
    assert p.feed({"event": "runner_on_ok", "event_data": {"host": "h1", "res": {}}}) == []
    failed = p.feed(
        {"event": "runner_on_failed", "event_data": {"host": "h1", "res": {"msg": "boom"}}}
    )
    assert failed == ["   h1           FAILED   vastllm.stack.model : Pull | progress: boom"]
    p.feed({"event": "playbook_on_stats", "event_data": {"ok": {"h1": 3}, "changed": {"h1": 0},
                                                          "failures": {"h1": 1}}})  # fmt: skip
    assert p.changed == 0
    assert p.recap["h1"].failed == 1


def test_redaction():
    event = {"stdout": "key sk-secret-1 here", "event_data": {"res": {"msg": ["a sk-secret-1"]}}}
    redact_in_place(event, ["sk-secret-1", ""])
    assert "sk-secret-1" not in repr(event)
    assert event["event_data"]["res"]["msg"] == ["a <redacted>"]
    assert redact("abc", ["ab"]) == "abc"  # too short to be a key: left alone


def test_probe_parsing():
    report, ps = parse_probe('{"idle": {}}\n----vastllm-separator----\n'
                             '{"models": [{"name": "m:1", "context_length": 32768}]}')  # fmt: skip
    assert report == {"idle": {}}
    assert served_context(ps, "m:1") == 32768
    assert served_context(ps, "other") is None
    assert parse_probe("null\n----vastllm-separator----\nnull") == (None, None)


def test_paths_and_settings(tmp_path):
    paths = paths_from_env({}, Path("/home/u"))
    assert paths.env_file("x") == Path("/home/u/.config/vastllm/x.env")
    assert paths.runs_dir == Path("/home/u/.local/state/vastllm/runs")
    assert (
        paths_from_env({"VASTLLM_HOME": str(tmp_path)}, Path("/h")).runs_dir
        == tmp_path / "state/runs"
    )
    s = settings_from({"max_price": 1, "gpu": "RTX_4090, A100*", "local_port": 9000}, "f")
    assert s.max_price == 1.0
    assert s.gpu == ["RTX_4090", "A100*"]
    assert s.local_port == 9000
    with pytest.raises(CliError, match="unknown setting"):
        settings_from({"max_prise": 1}, "f")
    with pytest.raises(CliError, match="number"):
        settings_from({"max_price": "cheap"}, "f")


def test_the_env_window_is_the_one_the_proxy_enforces():
    health = {"context_window": {"served": 32768, "configured": 65536, "loaded": 65536}}
    assert proxy_window(health) == 32768
    assert proxy_window({"context_window": {"served": 0}}) is None
    assert proxy_window({"context_window": {"served": True}}) is None
    assert proxy_window({"status": "ok"}) is None
    assert proxy_window(None) is None
