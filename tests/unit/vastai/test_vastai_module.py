"""Pure parts of plugins/modules/vastai_instance.py: the SSH readiness probe and state checks."""

from __future__ import annotations

import socket
import threading
import time

import pytest


@pytest.fixture
def listener():
    """A loopback TCP listener that answers each connection with ``reply`` then closes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    state = {"reply": b"SSH-2.0-lab\r\n", "stop": False}

    def serve():
        sock.settimeout(0.05)
        while not state["stop"]:
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                if state["reply"]:
                    conn.sendall(state["reply"])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1], state
    state["stop"] = True
    thread.join(timeout=2)
    sock.close()


def test_ssh_banner_detected(module_file, listener):
    port, _ = listener
    assert module_file.ssh_banner_ok("127.0.0.1", port, 2.0) is True


def test_non_ssh_service_is_not_ready(module_file, listener):
    port, state = listener
    state["reply"] = b"HTTP/1.1 400 Bad Request\r\n\r\n"
    assert module_file.ssh_banner_ok("127.0.0.1", port, 2.0) is False
    state["reply"] = b""  # accepts and closes without a word
    assert module_file.ssh_banner_ok("127.0.0.1", port, 2.0) is False


def test_closed_port_is_not_ready_and_returns_fast(module_file):
    start = time.monotonic()
    assert module_file.ssh_banner_ok("127.0.0.1", 9, 2.0) is False
    assert time.monotonic() - start < 2.0


def test_silent_listener_is_bounded_by_the_timeout(module_file):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)  # the kernel accepts, nobody ever writes
    try:
        start = time.monotonic()
        assert module_file.ssh_banner_ok("127.0.0.1", sock.getsockname()[1], 0.3) is False
        assert time.monotonic() - start < 2.0
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("instance", "running", "stopped"),
    [
        ({"actual_status": "running", "intended_status": "running"}, True, False),
        ({"actual_status": "loading", "intended_status": "running"}, False, False),
        ({"actual_status": None, "intended_status": "running"}, False, False),
        ({"actual_status": "exited", "intended_status": "stopped"}, False, True),
        ({"actual_status": "running", "intended_status": "stopped"}, True, True),
    ],
)
def test_state_checks(module_file, instance, running, stopped):
    assert module_file.is_running(instance) is running
    assert module_file.is_stopped(instance) is stopped


# -- the whole module in-process, against the vast.ai lab double ---------------------------------


def run_module(module_file, monkeypatch, capsys, **args):
    """Run vastai_instance.main() with ``args``; return its JSON result."""
    import json

    from ansible.module_utils import basic

    payload = {"ANSIBLE_MODULE_ARGS": args}
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps(payload).encode())
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy")
    with pytest.raises(SystemExit):
        module_file.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def market():
    """A lab account with no instances and the default offers; fast transitions."""
    from vastllm_lab.vastai.server import LabServer
    from vastllm_lab.vastai.state import LabState

    server = LabServer(LabState(api_keys=["lab-key"], loading_delay=0.05)).start()
    try:
        yield server
    finally:
        server.stop()


def rent_args(market, **over):
    args = {
        "label": "billed-box",
        "api_key": "lab-key",
        "api_url": market.url,
        "max_dph": 5.0,
        "image": "vastai/base-image:lab",
        "wait_ssh": False,
        "poll_interval": 0.05,
        "retries": 0,
    }
    args.update(over)
    return args


def fault(market, status, path_prefix, count=1):
    from vastllm_lab.vastai.state import Fault

    market.state.add_fault(Fault(status=status, count=count, path_prefix=path_prefix))


def rented_ids(market):
    return [i for i, row in market.state.instances.items() if row.get("label") == "billed-box"]


def assert_names_the_rental(result, market):
    """The failure names the instance already rented: id, label and $/h, in msg and fields."""
    [instance_id] = rented_ids(market)
    dph = float(market.state.instances[instance_id]["dph_total"])
    assert result["failed"] is True
    assert str(instance_id) in result["msg"]
    assert "'billed-box'" in result["msg"]
    assert f"${dph:.4f}/h" in result["msg"]
    assert result["instance"]["id"] == instance_id
    assert result["rented"] == {"id": instance_id, "label": "billed-box", "dph_total": dph}
    assert result["actions"][0] == "rent"
    assert result["changed"] is True


def test_failed_ssh_key_attach_names_the_rented_instance(module_file, monkeypatch, capsys, market):
    fault(market, 500, "/api/v0/instances/")  # the first call after renting: POST .../ssh/
    result = run_module(
        module_file, monkeypatch, capsys, **rent_args(market, ssh_key="ssh-ed25519 AAAA lab")
    )
    assert_names_the_rental(result, market)
    assert "ssh" in result["msg"].lower()


def test_api_error_while_waiting_names_the_rented_instance(
    module_file, monkeypatch, capsys, market
):
    fault(market, 500, "/api/v0/instances/")  # the first status poll after renting
    result = run_module(module_file, monkeypatch, capsys, **rent_args(market))
    assert_names_the_rental(result, market)
    assert "server error 500" in result["msg"]


def test_wait_timeout_names_the_rented_instance_and_its_price(
    module_file, monkeypatch, capsys, market
):
    market.state.loading_delay = 3600  # never becomes running
    result = run_module(module_file, monkeypatch, capsys, **rent_args(market, wait_timeout=0))
    assert_names_the_rental(result, market)
    assert "timed out" in result["msg"]


def test_check_mode_plans_the_rental_without_renting(module_file, monkeypatch, capsys, market):
    result = run_module(
        module_file,
        monkeypatch,
        capsys,
        _ansible_check_mode=True,
        _ansible_diff=True,
        **rent_args(market, ssh_key="ssh-ed25519 AAAA lab"),
    )
    assert result["changed"] is True
    assert result["actions"] == ["rent", "attach_ssh_key"]
    assert result["offer"]["dph_total"] <= 5.0
    assert result["diff"]["before"]["status"] == "absent"
    assert result["diff"]["after"]["status"] == "running"
    assert rented_ids(market) == []
    assert not any(method == "PUT" for method, _ in market.state.requests)


def test_rent_then_second_run_changes_nothing(module_file, monkeypatch, capsys, market):
    first = run_module(module_file, monkeypatch, capsys, **rent_args(market))
    assert first["changed"] is True
    assert first["actions"] == ["rent"]
    assert first["hostvars"]["vastai_status"] == "running"
    second = run_module(module_file, monkeypatch, capsys, **rent_args(market))
    assert second["changed"] is False
    assert second["actions"] == []
    assert len(rented_ids(market)) == 1


# -- the plan, from literals ---------------------------------------------------------------------

PARAMS = {
    "label": "box",
    "state": "present",
    "max_dph": 0.5,
    "image": "img:1",
    "gpu_names": [],
    "num_gpus": 1,
    "min_gpu_ram": None,
    "min_disk": None,
    "disk": 32.0,
    "min_reliability": None,
    "verified_only": False,
    "region": None,
    "offer_filters": {},
    "ssh_key": "ssh-ed25519 AAAA me",
    "wait": True,
    "wait_ssh": True,
}
OFFERS = [
    {"id": 1, "dph_total": 0.9, "num_gpus": 1, "gpu_name": "RTX 4090", "disk_space": 100},
    {"id": 2, "dph_total": 0.3, "num_gpus": 1, "gpu_name": "RTX 3090", "disk_space": 100},
    {"id": 3, "dph_total": 0.4, "num_gpus": 1, "gpu_name": "RTX 4090", "disk_space": 100},
]
RUNNING = {"id": 7, "label": "box", "actual_status": "running", "intended_status": "running"}
STOPPED = {"id": 7, "label": "box", "actual_status": "exited", "intended_status": "stopped"}


def test_plan_rents_the_cheapest_offer_under_the_cap(module_file):
    todo = module_file.plan(PARAMS, [], OFFERS)
    assert todo["actions"] == ["rent", "attach_ssh_key"]
    assert todo["offer"]["id"] == 2
    assert todo["dph"] == 0.3
    assert (todo["before"], todo["after"]) == ("absent", "running")
    assert module_file.needs_offers(PARAMS, []) is True


def test_plan_refuses_when_no_offer_fits(module_file):
    with pytest.raises(module_file.PlanError, match=r"at or below \$0.2/h \(3 offers"):
        module_file.plan({**PARAMS, "max_dph": 0.2}, [], OFFERS)


@pytest.mark.parametrize(
    ("state", "found", "actions", "after"),
    [
        ("present", [RUNNING], [], "running"),
        ("running", [STOPPED], ["start"], "running"),
        ("present", [STOPPED], [], "exited"),
        ("stopped", [RUNNING], ["stop"], "exited"),
        ("stopped", [STOPPED], [], "exited"),
        ("absent", [RUNNING, {**STOPPED, "id": 8}], ["destroy", "destroy"], "absent"),
        ("absent", [], [], "absent"),
    ],
)
def test_plan_for_existing_instances(module_file, state, found, actions, after):
    todo = module_file.plan({**PARAMS, "state": state}, found, None)
    assert todo["actions"] == actions
    assert todo["after"] == after
    assert todo["offer"] is None
    assert module_file.needs_offers({**PARAMS, "state": state}, found) is False


@pytest.mark.parametrize(
    ("state", "found", "message"),
    [
        ("present", [RUNNING, {**RUNNING, "id": 8}], "matches 2 instances"),
        ("stopped", [], "no instance labelled 'box' to stop"),
    ],
)
def test_plan_refuses_what_cannot_be_done(module_file, state, found, message):
    with pytest.raises(module_file.PlanError, match=message):
        module_file.plan({**PARAMS, "state": state}, found, None)


# -- starting/stopping an existing instance needs no offer options (review of issue 11) ---------

NO_RENT = {**PARAMS, "state": "running", "max_dph": None, "image": None}
CONTAINER_EXITED = {
    "id": 7,
    "label": "box",
    "actual_status": "exited",
    "intended_status": "running",
}


def test_plan_starts_a_stopped_instance_without_max_dph_or_image(module_file):
    todo = module_file.plan(NO_RENT, [STOPPED], None)
    assert todo["actions"] == ["start"]
    assert module_file.needs_offers(NO_RENT, [STOPPED]) is False


@pytest.mark.parametrize("state", ["running", "present"])
@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ({"max_dph": None}, "max_dph"),
        ({"image": None}, "image"),
        ({"max_dph": None, "image": None}, "max_dph and image"),
    ],
)
def test_plan_refuses_to_rent_without_max_dph_or_image(module_file, state, missing, named):
    with pytest.raises(module_file.PlanError, match=f"needs {named}"):
        module_file.plan({**PARAMS, "state": state, **missing}, [], OFFERS)


def test_module_starts_a_stopped_instance_with_only_label_and_state(
    module_file, monkeypatch, capsys, market
):
    row = market.state.add_instance(
        {
            "id": 4242,
            "label": "idle-stopped",
            "actual_status": "exited",
            "intended_status": "stopped",
        }
    )
    result = run_module(
        module_file,
        monkeypatch,
        capsys,
        label="idle-stopped",
        state="running",
        api_key="lab-key",
        api_url=market.url,
        wait_ssh=False,
        poll_interval=0.05,
        retries=0,
    )
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["actions"] == ["start"]
    assert row["intended_status"] == "running"
    assert market.state.instances[4242]["actual_status"] == "running"


def test_module_refuses_to_rent_without_max_dph_naming_it(module_file, monkeypatch, capsys, market):
    result = run_module(
        module_file,
        monkeypatch,
        capsys,
        label="nothing-here",
        state="running",
        api_key="lab-key",
        api_url=market.url,
        image="img:1",
        retries=0,
    )
    assert result["failed"] is True
    assert "max_dph" in result["msg"]
    assert "rent" in result["msg"]
    assert not market.state.instances


def test_plan_stops_when_only_the_container_exited(module_file):
    """vast.ai's intended_status is what the user asked; actual_status is the container. An
    instance whose container exited but that is still meant to run is billed: stop it."""
    todo = module_file.plan({**PARAMS, "state": "stopped"}, [CONTAINER_EXITED], None)
    assert todo["actions"] == ["stop"]
    todo = module_file.plan({**PARAMS, "state": "stopped"}, [STOPPED], None)
    assert todo["actions"] == []
    stopping = {**RUNNING, "intended_status": "stopped"}  # asked to stop, container still up
    assert module_file.plan({**PARAMS, "state": "stopped"}, [stopping], None)["actions"] == []


def test_module_stops_an_instance_whose_container_exited(module_file, monkeypatch, capsys, market):
    market.state.add_instance(
        {"id": 4343, "label": "crashed", "actual_status": "exited", "intended_status": "running"}
    )
    result = run_module(
        module_file,
        monkeypatch,
        capsys,
        label="crashed",
        state="stopped",
        api_key="lab-key",
        api_url=market.url,
        retries=0,
    )
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert market.state.instances[4343]["intended_status"] == "stopped"
