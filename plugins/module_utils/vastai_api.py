# Copyright: vastllm contributors
# Apache-2.0
"""Shared vast.ai REST client and pure helpers for the `vastai` inventory plugin and the
`vastai_instance` module.

Only the standard library is used (urllib with one shared TLS context), so the file ships
inside the module's AnsiballZ payload and runs in the inventory plugin without extra
dependencies.

Layout:
  * pure functions (no I/O): URL building, retry decisions, error mapping, hostvars;
  * ``VastAIClient``: the thin HTTP edge (auth, pagination, retries with backoff).

The API key is only ever placed in the ``Authorization`` header; every error message built
here is passed through ``redact`` so that a key echoed back by a server never leaks.
"""

from __future__ import annotations

import email.utils
import fnmatch
import json
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlsplit
from urllib.request import HTTPRedirectHandler, HTTPSHandler, Request, build_opener

DEFAULT_API_URL = "https://console.vast.ai"
PAGE_SIZE = 25
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
DEFAULT_PREFIX = "vastai_"
CONNECT_MODES = ("auto", "direct", "proxy")

# The vast.ai CLI's key files, newest first (see `vastai set api-key`).
KEY_FILE_RELATIVE = (os.path.join(".config", "vastai", "vast_api_key"), ".vast_api_key")


class VastAIError(Exception):
    """A failed vast.ai API call, with a message meant for the user (never holds the key)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------


def key_file_candidates(environ: Mapping[str, str], home: str) -> list[str]:
    """Where the vastai CLI keeps the key, in lookup order (XDG first, then legacy)."""
    paths = []
    xdg = environ.get("XDG_CONFIG_HOME")
    if xdg:
        paths.append(os.path.join(xdg, "vastai", "vast_api_key"))
    paths.extend(os.path.join(home, rel) for rel in KEY_FILE_RELATIVE)
    # Keep order, drop duplicates (XDG_CONFIG_HOME=~/.config).
    seen: list[str] = []
    for path in paths:
        if path not in seen:
            seen.append(path)
    return seen


def resolve_api_key(
    explicit: str | None,
    environ: Mapping[str, str] | None = None,
    home: str | None = None,
) -> str:
    """Return the API key: the explicit value, else ``VAST_API_KEY``, else the CLI key file.

    Raises VastAIError naming every place that was looked at (never a key).
    """
    if explicit:
        return explicit.strip()
    env = os.environ if environ is None else environ
    from_env = env.get("VAST_API_KEY", "").strip()
    if from_env:
        return from_env
    candidates = key_file_candidates(env, home if home is not None else os.path.expanduser("~"))
    for path in candidates:
        try:
            with open(path, encoding="utf-8") as handle:
                key = handle.read().strip()
        except OSError:
            continue
        if key:
            return key
    raise VastAIError(
        "no vast.ai API key: set the api_key option, the VAST_API_KEY environment variable, "
        "or save a key with `vastai set api-key` (looked in " + ", ".join(candidates) + ")"
    )


def redact(text: str, secret: str | None) -> str:
    """Replace every occurrence of ``secret`` in ``text``."""
    if secret and len(secret) >= 4:
        return text.replace(secret, "<redacted>")
    return text


def normalize_api_url(url: str | None) -> str:
    """Base URL without trailing slash; rejects anything but http(s)."""
    base = (url or DEFAULT_API_URL).strip().rstrip("/")
    if not base.startswith(("https://", "http://")):
        raise VastAIError(f"api_url must start with https:// or http://, got {base!r}")
    return base


def build_url(base: str, path: str, query: Mapping[str, Any] | None = None) -> str:
    """``base`` + ``path`` (``/api/v0`` prefixed unless versioned) + a query string.

    Non-string query values are JSON encoded, as the vast.ai API expects for
    ``select_filters``/``order_by``/``q``.
    """
    if not path.startswith("/api/v"):
        path = "/api/v0" + path
    url = base.rstrip("/") + path
    if query:
        parts = []
        for name, value in query.items():
            if value is None:
                continue
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            parts.append(f"{quote(name, safe='')}={quote(text, safe='')}")
        if parts:
            url += "?" + "&".join(parts)
    return url


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff for the ``attempt``-th retry (0-based), capped."""
    return float(min(cap, base * (2**attempt)))


def retry_decision(
    status: int | None,
    retry_after: float | None,
    attempt: int,
    retries: int,
    base: float,
    cap: float,
    max_retry_after: float,
    idempotent: bool = True,
) -> float | None:
    """How long to sleep before retrying, or None to stop.

    ``status`` None means a network failure. A server ``Retry-After`` is honoured when it is
    at most ``max_retry_after`` seconds (a longer wait fails at once with a clear message).
    A non-idempotent call (renting) is only retried on 429, which means "not processed":
    after a network failure or a 5xx the rental may have happened, and a retry could rent twice.
    """
    if attempt >= retries:
        return None
    if not idempotent and status != 429:
        return None
    if status is not None and status not in RETRYABLE_STATUS:
        return None
    if retry_after is not None:
        return retry_after if retry_after <= max_retry_after else None
    return backoff_delay(attempt, base, cap)


def _body_detail(body: bytes) -> str:
    try:
        data = json.loads(body.decode("utf-8", "replace") or "null")
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:200]
    if isinstance(data, dict):
        for field in ("msg", "error_description", "detail", "error", "message"):
            value = data.get(field)
            if isinstance(value, str) and value:
                return value[:200]
    return ""


def error_message(
    status: int, body: bytes, method: str, path: str, retry_after: float | None = None
) -> str:
    """A one-line, user-facing explanation of a failed API call."""
    detail = _body_detail(body)
    suffix = f" ({detail})" if detail else ""
    where = f"{method} {path}"
    if status == 401:
        return (
            f"vast.ai rejected the API key (401 Unauthorized) on {where}: check api_key / "
            f"VAST_API_KEY{suffix}"
        )
    if status == 403:
        return (
            f"vast.ai refused {where} (403 Forbidden): the API key lacks the permission for this "
            f"call{suffix}"
        )
    if status == 404:
        return f"vast.ai has no such resource: {where} (404 Not Found){suffix}"
    if status == 410:
        return (
            f"vast.ai retired {where} (410 Gone): this endpoint no longer exists; use the "
            f"v1 paginated instance listing{suffix}"
        )
    if status == 429:
        wait = f"; server asked to wait {retry_after:.0f}s" if retry_after is not None else ""
        return f"vast.ai rate limit (429 Too Many Requests) on {where}, gave up after retries{wait}"
    if status >= 500:
        return f"vast.ai server error {status} on {where}{suffix}"
    return f"vast.ai API error {status} on {where}{suffix}"


# --------------------------------------------------------------------------------------
# Instances -> hostvars (pure)
# --------------------------------------------------------------------------------------


def instance_status(instance: Mapping[str, Any]) -> str:
    """The instance's actual status (``loading`` when the API has none yet)."""
    status = instance.get("actual_status")
    return str(status) if status else "loading"


def direct_ssh(instance: Mapping[str, Any]) -> tuple[str, int] | None:
    """(public IP, host port mapped to 22/tcp) when the instance has a direct SSH mapping."""
    ports = instance.get("ports") or {}
    if not isinstance(ports, Mapping):
        return None
    mappings = ports.get("22/tcp") or []
    ip = str(instance.get("public_ipaddr") or "").strip()
    if not ip or not mappings:
        return None
    for mapping in mappings:
        try:
            port = int(str(mapping.get("HostPort", "")).strip())
        except (AttributeError, ValueError):
            continue
        if 0 < port < 65536:
            return ip, port
    return None


def proxy_ssh(instance: Mapping[str, Any]) -> tuple[str, int] | None:
    """(ssh_host, ssh_port) through vast.ai's SSH proxy.

    Jupyter images listen one port above the advertised ``ssh_port`` on the proxy.
    """
    host = str(instance.get("ssh_host") or "").strip()
    try:
        port = int(instance.get("ssh_port") or 0)
    except (TypeError, ValueError):
        return None
    if not host or port <= 0:
        return None
    if "jupyter" in str(instance.get("image_runtype") or ""):
        port += 1
    return host, port


def ssh_endpoint(
    instance: Mapping[str, Any], connect_with: str = "auto"
) -> tuple[str | None, int | None, str | None]:
    """(host, port, mode) for SSH; mode is ``direct``/``proxy`` or None when unreachable."""
    if connect_with not in CONNECT_MODES:
        raise VastAIError(f"connect_with must be one of {', '.join(CONNECT_MODES)}")
    if connect_with in ("auto", "direct"):
        found = direct_ssh(instance)
        if found:
            return found[0], found[1], "direct"
        if connect_with == "direct":
            return None, None, None
    found = proxy_ssh(instance)
    if found:
        return found[0], found[1], "proxy"
    return None, None, None


# API field -> hostvar suffix. Values are copied as the API returns them.
HOSTVAR_FIELDS = (
    ("id", "id"),
    ("label", "label"),
    ("intended_status", "intended_status"),
    ("cur_state", "cur_state"),
    ("gpu_name", "gpu_name"),
    ("num_gpus", "num_gpus"),
    ("gpu_ram", "gpu_ram"),
    ("cpu_ram", "cpu_ram"),
    ("cpu_cores_effective", "cpu_cores"),
    ("disk_space", "disk_space"),
    ("public_ipaddr", "public_ipaddr"),
    ("ssh_host", "ssh_host"),
    ("ssh_port", "ssh_port"),
    ("dph_total", "dph_total"),
    ("geolocation", "geolocation"),
    ("image_uuid", "image"),
    ("image_runtype", "image_runtype"),
    ("machine_id", "machine_id"),
    ("reliability2", "reliability"),
    ("start_date", "start_date"),
)


def instance_hostvars(
    instance: Mapping[str, Any], prefix: str = DEFAULT_PREFIX, connect_with: str = "auto"
) -> dict[str, Any]:
    """Hostvars for one API instance: connection vars plus ``prefix``-ed facts."""
    host, port, mode = ssh_endpoint(instance, connect_with)
    result: dict[str, Any] = {"ansible_user": "root"}
    if host is not None:
        result["ansible_host"] = host
        result["ansible_port"] = port
    for field, name in HOSTVAR_FIELDS:
        result[prefix + name] = instance.get(field)
    result[prefix + "status"] = instance_status(instance)
    ports = instance.get("ports")
    result[prefix + "ports"] = dict(ports) if isinstance(ports, Mapping) else {}
    result[prefix + "connect_with"] = mode
    return result


# Instance fields that can hold secrets (container env such as HF tokens, the Jupyter token,
# the onstart script, registry logins). Never cached, returned or offered to templates.
SENSITIVE_FIELDS = frozenset(
    {"extra_env", "jupyter_token", "onstart", "image_login", "instance_api_key", "api_key"}
)


def public_instance(instance: Mapping[str, Any]) -> dict[str, Any]:
    """The instance without the fields that can hold secrets."""
    return {k: v for k, v in instance.items() if k not in SENSITIVE_FIELDS}


def default_hostname(instance: Mapping[str, Any]) -> str:
    """The inventory's default host name: the label when it is set, else the instance id."""
    label = str(instance.get("label") or "").strip()
    return label if label else str(instance.get("id"))


def _matches_any(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def instance_matches(
    instance: Mapping[str, Any],
    statuses: Iterable[str] | None = None,
    labels: Iterable[str] | None = None,
    gpu_names: Iterable[str] | None = None,
) -> bool:
    """Client-side filters: status in ``statuses``, label/gpu matching any glob.

    Empty or None filter lists match everything.
    """
    status_list = [s.lower() for s in statuses or []]
    if status_list and instance_status(instance).lower() not in status_list:
        return False
    label_list = list(labels or [])
    if label_list and not _matches_any(str(instance.get("label") or ""), label_list):
        return False
    gpu_list = list(gpu_names or [])
    if gpu_list:
        gpu = str(instance.get("gpu_name") or "")
        # Users write RTX_4090 like the vastai CLI does; the API says "RTX 4090".
        normalized = [g.replace("_", " ") for g in gpu_list]
        if not _matches_any(gpu, normalized) and not _matches_any(gpu, gpu_list):
            return False
    return True


# --------------------------------------------------------------------------------------
# HTTP edge
# --------------------------------------------------------------------------------------

# transport(method, url, headers, body, timeout) -> (status, headers, body)
Transport = Callable[
    [str, str, dict[str, str], bytes | None, float], tuple[int, Mapping[str, str], bytes]
]


def _same_service(origin: str, target: str) -> bool:
    """Whether a redirect stays with the service the key is meant for.

    Same scheme and host, or both hosts under vast.ai (the console redirects between its
    own hosts). Anything else loses the Authorization header.
    """
    a, b = urlsplit(origin), urlsplit(target)
    if a.scheme != b.scheme:
        return False
    ha, hb = (a.hostname or "").lower(), (b.hostname or "").lower()
    if ha == hb and a.port == b.port:
        return True

    def vast(host: str) -> bool:
        return host == "vast.ai" or host.endswith(".vast.ai")

    return vast(ha) and vast(hb)


class _KeepAuthOnlyWithinService(HTTPRedirectHandler):
    def redirect_request(
        self, req: Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and not _same_service(req.full_url, newurl):
            new.remove_header("Authorization")
        return new


def urllib_transport(validate_certs: bool = True) -> Transport:
    """A stdlib transport with one TLS context for every request (HTTP errors -> statuses).

    ``ansible.module_utils.urls.open_url`` builds a new TLS context per call (~90 ms each,
    4 s for a 40-page listing); one context keeps a page fetch at a few milliseconds.
    Proxies from the environment (``https_proxy``...) are honoured as by urllib.
    """
    context = ssl.create_default_context()
    if not validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    opener = build_opener(HTTPSHandler(context=context), _KeepAuthOnlyWithinService())

    def _send(
        method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        request = Request(url, data=body, headers=headers, method=method)
        try:
            with opener.open(request, timeout=timeout) as response:
                return int(response.status), dict(response.headers), response.read()
        except HTTPError as err:
            payload = err.read() if err.fp is not None else b""
            return int(err.code), dict(err.headers or {}), payload

    return _send


class VastAIClient:
    """vast.ai REST client: bearer auth, v1 pagination, retries with backoff."""

    def __init__(
        self,
        api_key: str,
        api_url: str | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        max_retry_after: float = 120.0,
        validate_certs: bool = True,
        transport: Transport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not api_key:
            raise VastAIError("no vast.ai API key given")
        self._api_key = api_key
        self.api_url = normalize_api_url(api_url)
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._transport = transport or urllib_transport(validate_certs)
        self._sleep = sleep
        self._clock = clock
        self.requests_made = 0

    def __repr__(self) -> str:  # never show the key
        return f"VastAIClient(api_url={self.api_url!r})"

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        idempotent: bool = True,
    ) -> Any:
        """One API call; returns the decoded JSON body. Raises VastAIError."""
        url = build_url(self.api_url, path, query)
        headers = {
            "Authorization": "Bearer " + self._api_key,
            "Accept": "application/json",
            "User-Agent": "vastllm-ansible/0.1",
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        short_path = path if path.startswith("/api/v") else "/api/v0" + path
        attempt = 0
        while True:
            self.requests_made += 1
            try:
                status, resp_headers, payload = self._transport(
                    method, url, headers, data, self.timeout
                )
            except (URLError, OSError, socket.timeout) as err:
                reason = getattr(err, "reason", err)
                delay = retry_decision(
                    None, None, attempt, self.retries, self.backoff, self.max_backoff, 0, idempotent
                )
                if delay is None:
                    raise VastAIError(
                        redact(
                            f"cannot reach vast.ai at {self.api_url} ({method} {short_path}): "
                            f"{reason}",
                            self._api_key,
                        )
                    ) from None
                self._sleep(delay)
                attempt += 1
                continue
            if 200 <= status < 300:
                try:
                    return json.loads(payload.decode("utf-8") or "null")
                except ValueError:
                    raise VastAIError(
                        f"vast.ai returned a response that is not JSON on {method} {short_path}",
                        status,
                    ) from None
            lowered = {str(k).lower(): v for k, v in resp_headers.items()}
            retry_after = parse_retry_after(lowered.get("retry-after"), self._clock())
            delay = retry_decision(
                status,
                retry_after,
                attempt,
                self.retries,
                self.backoff,
                self.max_backoff,
                self.max_retry_after,
                idempotent,
            )
            if delay is None:
                raise VastAIError(
                    redact(
                        error_message(status, payload, method, short_path, retry_after),
                        self._api_key,
                    ),
                    status,
                )
            self._sleep(delay)
            attempt += 1

    # -- instances ---------------------------------------------------------------------

    def list_instances(
        self, select_filters: Mapping[str, Any] | None = None, page_size: int = PAGE_SIZE
    ) -> list[dict[str, Any]]:
        """Every instance of the account, following ``next_token`` across v1 pages."""
        query: dict[str, Any] = {
            "select_filters": dict(select_filters or {}),
            "order_by": [{"col": "id", "dir": "asc"}],
            "limit": page_size,
        }
        rows: list[dict[str, Any]] = []
        seen_tokens: set[str] = set()
        while True:
            data = self.request("GET", "/api/v1/instances/", query)
            if not isinstance(data, dict):
                raise VastAIError("vast.ai instance listing returned an unexpected shape")
            page = data.get("instances") or []
            rows.extend(public_instance(row) for row in page if isinstance(row, dict))
            token = data.get("next_token")
            if not token:
                return rows
            token = str(token)
            if token in seen_tokens:
                raise VastAIError("vast.ai instance listing repeated a page token; stopping")
            seen_tokens.add(token)
            query["after_token"] = token

    def get_instance(self, instance_id: int) -> dict[str, Any] | None:
        """One instance by id, or None when the account has no such instance."""
        try:
            data = self.request("GET", f"/instances/{int(instance_id)}/", {"owner": "me"})
        except VastAIError as err:
            if err.status == 404:
                return None
            raise
        found = data.get("instances") if isinstance(data, dict) else None
        return public_instance(found) if isinstance(found, dict) else None

    def search_offers(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        data = self.request("POST", "/bundles/", body=dict(query))
        offers = data.get("offers") if isinstance(data, dict) else None
        return [o for o in offers or [] if isinstance(o, dict)]

    def create_instance(self, offer_id: int, payload: Mapping[str, Any]) -> int:
        """Rent ``offer_id``; returns the new instance id."""
        data = self.request("PUT", f"/asks/{int(offer_id)}/", body=dict(payload), idempotent=False)
        if not isinstance(data, dict) or not data.get("success") or not data.get("new_contract"):
            detail = _body_detail(json.dumps(data).encode()) if isinstance(data, dict) else ""
            raise VastAIError(f"vast.ai did not create an instance from offer {offer_id} {detail}")
        return int(data["new_contract"])

    def set_state(self, instance_id: int, state: str) -> None:
        self.request("PUT", f"/instances/{int(instance_id)}/", body={"state": state})

    def set_label(self, instance_id: int, label: str) -> None:
        self.request("PUT", f"/instances/{int(instance_id)}/", body={"label": label})

    def destroy_instance(self, instance_id: int) -> None:
        self.request("DELETE", f"/instances/{int(instance_id)}/", body={})

    def attach_ssh_key(self, instance_id: int, ssh_key: str) -> None:
        self.request("POST", f"/instances/{int(instance_id)}/ssh/", body={"ssh_key": ssh_key})
