"""Pure helpers and the HTTP client of plugins/module_utils/vastai_api.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.error import URLError

import pytest

KEY = "sk-secret-key-123456"


# -- API key resolution -------------------------------------------------------------------


def test_explicit_key_wins_over_env_and_file(api, tmp_path):
    (tmp_path / ".vast_api_key").write_text("from-file\n")
    assert api.resolve_api_key(" explicit ", {"VAST_API_KEY": "env"}, str(tmp_path)) == "explicit"


def test_env_key_used_when_no_explicit(api, tmp_path):
    assert api.resolve_api_key(None, {"VAST_API_KEY": " env-key "}, str(tmp_path)) == "env-key"


def test_cli_key_file_xdg_before_legacy(api, tmp_path):
    xdg = tmp_path / "xdg"
    (xdg / "vastai").mkdir(parents=True)
    (xdg / "vastai" / "vast_api_key").write_text("xdg-key\n")
    (tmp_path / ".vast_api_key").write_text("legacy-key\n")
    env = {"XDG_CONFIG_HOME": str(xdg)}
    assert api.resolve_api_key(None, env, str(tmp_path)) == "xdg-key"


def test_cli_key_file_default_config_then_legacy(api, tmp_path):
    (tmp_path / ".vast_api_key").write_text("legacy-key\n")
    assert api.resolve_api_key(None, {}, str(tmp_path)) == "legacy-key"
    (tmp_path / ".config" / "vastai").mkdir(parents=True)
    (tmp_path / ".config" / "vastai" / "vast_api_key").write_text("config-key")
    assert api.resolve_api_key(None, {}, str(tmp_path)) == "config-key"


def test_missing_key_names_every_place_looked(api, tmp_path):
    (tmp_path / ".vast_api_key").write_text("   \n")  # empty file does not count
    with pytest.raises(api.VastAIError) as err:
        api.resolve_api_key(None, {}, str(tmp_path))
    message = err.value.message
    assert "VAST_API_KEY" in message
    assert str(tmp_path / ".config" / "vastai" / "vast_api_key") in message
    assert str(tmp_path / ".vast_api_key") in message


# -- URLs, retry decisions, error messages -------------------------------------------------


def test_build_url_prefixes_v0_and_json_encodes(api):
    url = api.build_url("https://h/", "/instances/5/", {"owner": "me"})
    assert url == "https://h/api/v0/instances/5/?owner=me"
    url = api.build_url("https://h", "/api/v1/instances/", {"limit": 25, "x": None})
    assert url == "https://h/api/v1/instances/?limit=25"
    url = api.build_url("https://h", "/api/v1/instances/", {"select_filters": {"a": {"eq": 1}}})
    assert url.endswith("select_filters=%7B%22a%22%3A%7B%22eq%22%3A1%7D%7D")


def test_normalize_api_url_rejects_other_schemes(api):
    assert api.normalize_api_url(None) == "https://console.vast.ai"
    assert api.normalize_api_url("http://127.0.0.1:1/") == "http://127.0.0.1:1"
    with pytest.raises(api.VastAIError, match="https://"):
        api.normalize_api_url("ftp://x")


def test_parse_retry_after_seconds_date_and_garbage(api):
    assert api.parse_retry_after("3", 0.0) == 3.0
    assert api.parse_retry_after(" 0.5 ", 0.0) == 0.5
    assert api.parse_retry_after("-4", 0.0) == 0.0
    assert api.parse_retry_after(None, 0.0) is None
    assert api.parse_retry_after("soon", 0.0) is None
    now = datetime(2030, 1, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert api.parse_retry_after(date, now.timestamp()) == pytest.approx(7.0)


@pytest.mark.parametrize(
    ("status", "idempotent", "expected"),
    [
        (429, True, True),
        (502, True, True),
        (503, True, True),
        (504, True, True),
        (None, True, True),  # network failure
        (500, True, False),
        (401, True, False),
        (404, True, False),
        (410, True, False),
        # renting: only 429 ("not processed") is safe to send again
        (429, False, True),
        (502, False, False),
        (None, False, False),
    ],
)
def test_which_failures_are_retried(api, status, idempotent, expected):
    assert api.retryable(status, idempotent) is expected


def test_client_policy_is_the_shared_retry_rule(api):
    from ansible_collections.vastllm.stack.plugins.module_utils._retry import RetryPolicy

    client = api.VastAIClient(KEY, "http://127.0.0.1:9", retries=4, backoff=2.0, jitter=0.0)
    assert client.policy == RetryPolicy(retries=4, base=2.0, cap=30.0, max_retry_after=120.0)
    assert client.policy.schedule() == [2.0, 4.0, 8.0, 16.0]


@pytest.mark.parametrize(
    ("status", "needle"),
    [
        (401, "rejected the API key"),
        (403, "lacks the permission"),
        (404, "no such resource"),
        (410, "410 Gone"),
        (429, "rate limit"),
        (500, "server error 500"),
        (418, "API error 418"),
    ],
)
def test_error_message_per_status(api, status, needle):
    body = json.dumps({"success": False, "msg": "detail from server"}).encode()
    message = api.error_message(status, body, "GET", "/api/v1/instances/")
    assert needle in message
    assert "GET /api/v1/instances/" in message
    if status != 429:
        assert "detail from server" in message


@pytest.mark.parametrize("status", [404, 410])
def test_a_gone_offer_is_named_not_a_missing_endpoint(api, status):
    """vast.ai answers 404 (or 410 `cancel_unavail`) when the offer was rented by someone else."""
    body = b'{"success": false, "error": "no_such_ask", "msg": "no_such_ask"}'
    message = api.error_message(status, body, "PUT", "/api/v0/asks/30000012/")
    assert "offer 30000012 is no longer available" in message
    assert "retired" not in message
    assert "search again" in message


def test_create_on_a_gone_offer_says_so(api, lab):
    client = api.VastAIClient(api_key="lab-key", api_url=lab.url, retries=0)
    with pytest.raises(api.VastAIError, match="offer 999999 is no longer available"):
        client.create_instance(999999, {"image": "x", "disk": 20})


def test_error_message_tolerates_non_json_body(api):
    assert "<html>" in api.error_message(500, b"<html>oops</html>", "GET", "/x")
    assert api.error_message(500, b"", "GET", "/x") == "vast.ai server error 500 on GET /x"


def test_redact(api):
    assert api.redact(f"bad key {KEY}!", KEY) == "bad key <redacted>!"
    assert api.redact("nothing", None) == "nothing"


# -- HTTP client with a scripted transport ------------------------------------------------


class Script:
    """A transport answering from a list of (status, headers, body) or exceptions."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def __call__(self, method, url, headers, body, timeout):
        self.calls.append((method, url, dict(headers), body))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, hdrs, payload = answer
        return (
            status,
            hdrs,
            json.dumps(payload).encode() if not isinstance(payload, bytes) else payload,
        )


def _client(api, script, sleeps, **kw):
    kw.setdefault("rand", lambda: 0.0)  # the jitter's random draw: 0 keeps the plain backoff
    return api.VastAIClient(KEY, "http://127.0.0.1:9", transport=script, sleep=sleeps.append, **kw)


def test_client_sends_bearer_key_and_follows_next_token(api):
    script = Script(
        [
            (200, {}, {"instances": [{"id": 1}, {"id": 2}], "next_token": "T1"}),
            (200, {}, {"instances": [{"id": 3}], "next_token": None}),
        ]
    )
    rows = _client(api, script, []).list_instances({"label": {"eq": "x"}})
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert script.calls[0][2]["Authorization"] == f"Bearer {KEY}"
    assert "after_token" not in script.calls[0][1]
    assert "after_token=T1" in script.calls[1][1]
    assert "limit=25" in script.calls[1][1]


def test_client_stops_on_repeated_page_token(api):
    page = (200, {}, {"instances": [{"id": 1}], "next_token": "SAME"})
    with pytest.raises(api.VastAIError, match="repeated a page token"):
        _client(api, Script([page, page, page]), []).list_instances()


def test_client_retries_429_honouring_retry_after(api):
    sleeps: list[float] = []
    script = Script(
        [
            (429, {"Retry-After": "2"}, {"error": "rate"}),
            (429, {}, {"error": "rate"}),
            (200, {}, {"instances": [], "next_token": None}),
        ]
    )
    assert _client(api, script, sleeps, backoff=0.5).list_instances() == []
    assert sleeps == [2.0, 1.0]  # server's wait, then backoff 0.5 * 2**1


def test_client_gives_up_on_429_with_one_message(api):
    sleeps: list[float] = []
    script = Script([(429, {}, {})] * 4)
    with pytest.raises(api.VastAIError) as err:
        _client(api, script, sleeps, retries=3, backoff=0.1).list_instances()
    assert err.value.status == 429
    assert "rate limit" in err.value.message
    assert len(script.calls) == 4
    assert sleeps == [0.1, 0.2, 0.4]


def test_client_backoff_is_jittered_so_clients_spread_out(api):
    sleeps: list[float] = []
    script = Script([(503, {}, {}), (503, {}, {}), (200, {}, {})])
    client = _client(api, script, sleeps, backoff=1.0, jitter=0.25, rand=lambda: 0.5)
    client.request("GET", "/x/")
    assert sleeps == [0.875, 1.75]  # each wait shortened by 0.25 * 0.5 of itself


def test_client_fails_fast_when_retry_after_is_too_long(api):
    sleeps: list[float] = []
    script = Script([(429, {"Retry-After": "3600"}, {})])
    with pytest.raises(api.VastAIError, match="wait 3600s"):
        _client(api, script, sleeps, max_retry_after=60).list_instances()
    assert sleeps == []


@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_client_does_not_retry_client_errors(api, status):
    script = Script([(status, {}, {"msg": f"echo {KEY}"})])
    with pytest.raises(api.VastAIError) as err:
        _client(api, script, []).request("GET", "/api/v1/instances/")
    assert err.value.status == status
    assert KEY not in err.value.message
    assert len(script.calls) == 1


def test_client_retries_network_errors_then_names_the_url(api):
    sleeps: list[float] = []
    script = Script([URLError("connection refused")] * 3)
    with pytest.raises(api.VastAIError) as err:
        _client(api, script, sleeps, retries=2, backoff=0.1).request("GET", "/instances/1/")
    assert "cannot reach vast.ai at http://127.0.0.1:9" in err.value.message
    assert "connection refused" in err.value.message
    assert sleeps == [0.1, 0.2]


def test_client_rejects_non_json_success(api):
    with pytest.raises(api.VastAIError, match="not JSON"):
        _client(api, Script([(200, {}, b"<html>")]), []).request("GET", "/x/")


def test_client_repr_and_missing_key(api):
    client = _client(api, Script([]), [])
    assert KEY not in repr(client)
    with pytest.raises(api.VastAIError):
        api.VastAIClient("", "http://127.0.0.1:9")


def test_client_create_requires_new_contract(api):
    script = Script(
        [(200, {}, {"success": True, "new_contract": 77}), (200, {}, {"success": False})]
    )
    client = _client(api, script, [])
    assert client.create_instance(5, {"image": "x"}) == 77
    assert script.calls[0][0] == "PUT"
    assert script.calls[0][1].endswith("/api/v0/asks/5/")
    with pytest.raises(api.VastAIError, match="did not create"):
        client.create_instance(5, {"image": "x"})


def test_get_instance_404_is_none(api):
    script = Script([(404, {}, {}), (200, {}, {"instances": {"id": 9}})])
    client = _client(api, script, [])
    assert client.get_instance(9) is None
    assert client.get_instance(9) == {"id": 9}


# -- against the emulator, over real HTTP (ansible.module_utils.urls.Request) ----------


def test_transport_pages_through_the_emulator(api, lab):
    client = api.VastAIClient("lab-key", lab.url, retries=0)
    rows = client.list_instances()
    assert len(rows) == 60
    assert client.requests_made == 3  # 25 + 25 + 10
    assert len({r["id"] for r in rows}) == 60


def test_transport_maps_http_errors(api, lab):
    with pytest.raises(api.VastAIError) as err:
        api.VastAIClient("wrong", lab.url, retries=0).list_instances()
    assert err.value.status == 401
    with pytest.raises(api.VastAIError) as err:
        api.VastAIClient("lab-key", lab.url, retries=0).request("GET", "/instances/")
    assert err.value.status == 410


def test_transport_network_failure(api):
    # Port 9 (discard) on loopback: nothing listens there.
    client = api.VastAIClient("k", "http://127.0.0.1:9", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(api.VastAIError, match=r"cannot reach vast\.ai"):
        client.list_instances()


@pytest.mark.parametrize(
    ("origin", "target", "keep"),
    [
        ("https://console.vast.ai/api/v0/x", "https://console.vast.ai/api/v0/y", True),
        ("https://console.vast.ai/api/v0/x", "https://cloud.vast.ai/api/v0/x", True),
        ("https://console.vast.ai/api/v0/x", "http://cloud.vast.ai/api/v0/x", False),
        ("https://console.vast.ai/api/v0/x", "https://evil.example/x", False),
        ("https://console.vast.ai/x", "https://vast.ai.evil.example/x", False),
        ("http://127.0.0.1:8765/x", "http://127.0.0.1:8765/y", True),
        ("http://127.0.0.1:8765/x", "http://127.0.0.1:9999/y", False),
    ],
)
def test_redirects_keep_the_key_only_within_the_service(api, origin, target, keep):
    assert api._same_service(origin, target) is keep


@pytest.mark.parametrize(
    ("method", "status", "location", "expected"),
    [
        # 307/308 repeat the call with its body and the key (same service)
        ("PUT", 307, "/api/v0/y", ("PUT", "https://console.vast.ai/api/v0/y", True, b"{}")),
        # 301/302/303: a body-less GET
        ("PUT", 303, "/done", ("GET", "https://console.vast.ai/done", True, None)),
        ("GET", 302, "https://cloud.vast.ai/z", ("GET", "https://cloud.vast.ai/z", True, None)),
        # leaving the service: no key
        ("GET", 302, "https://evil.example/x", ("GET", "https://evil.example/x", False, None)),
        ("PUT", 308, "http://console.vast.ai/x", ("PUT", "http://console.vast.ai/x", False, b"{}")),
    ],
)
def test_redirect_request_keeps_the_key_only_within_the_service(
    api, method, status, location, expected
):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    new_method, url, new_headers, body = api.redirected(
        method, "https://console.vast.ai/api/v0/x", headers, b"{}", status, location
    )
    assert (new_method, url, "Authorization" in new_headers, body) == expected


def test_transport_follows_a_redirect_without_leaking_the_key(api):
    """Over real HTTP: the lab answers a redirect to another port; the key does not follow."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization")))
            if self.path.startswith("/api/"):
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{other.server_address[1]}/moved")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    first = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    other = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    for server in (first, other):
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        client = api.VastAIClient(KEY, f"http://127.0.0.1:{first.server_address[1]}", retries=0)
        assert client.request("GET", "/instances/1/") == {"ok": True}
    finally:
        for server in (first, other):
            server.shutdown()
            server.server_close()
    assert seen == [("/api/v0/instances/1/", f"Bearer {KEY}"), ("/moved", None)]


def test_secret_bearing_fields_never_leave_the_client(api):
    row = {
        "id": 1,
        "label": "x",
        "extra_env": [["HF_TOKEN", "hf_secret"]],
        "jupyter_token": "jt-secret",
        "onstart": "export TOKEN=secret",
    }
    script = Script(
        [
            (200, {}, {"instances": [row], "next_token": None}),
            (200, {}, {"instances": row}),
        ]
    )
    client = _client(api, script, [])
    listed = client.list_instances()
    single = client.get_instance(1)
    for got in (listed[0], single):
        assert got == {"id": 1, "label": "x"}
        assert "secret" not in json.dumps(got)


def test_renting_is_not_retried_after_a_possible_success(api):
    # 502 after a rental may mean it happened: never retried; 429 means "not processed": retried.
    sleeps: list[float] = []
    script = Script([(503, {}, {}), (200, {}, {"success": True, "new_contract": 5})])
    with pytest.raises(api.VastAIError) as err:
        _client(api, script, sleeps).create_instance(1, {"image": "i"})
    assert err.value.status == 503
    assert len(script.calls) == 1
    script = Script([(429, {}, {}), (200, {}, {"success": True, "new_contract": 5})])
    assert _client(api, script, sleeps).create_instance(1, {"image": "i"}) == 5
