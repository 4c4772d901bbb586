# Copyright: vastllm contributors
# Apache-2.0
"""The vast.ai REST client of the `vastai` inventory plugin and the `vastai_instance` module.

The HTTP edge (auth, pagination, retries), its errors and the API key lookup. What an instance
means for Ansible (host name, SSH endpoint, hostvars, filters) is in ``vastai_hosts``; the
retry rule (backoff, jitter, Retry-After) in ``_retry``.

Requests go through ``ansible.module_utils.urls.Request``, so proxy and CA settings work as for
every Ansible module. One ``Request`` with one TLS context (``make_context``) serves every call:
``open_url`` would build a new context per call, which measured 53 ms (http) / 39 ms (https) per
call against 3.6 / 7.0 ms with the shared context, p50 on the development VM
(``benchmarks/vastai_transport_bench.py``; 40 pages for 1,000 instances).

The API key is only ever placed in the ``Authorization`` header (dropped on a redirect that leaves
the service); every error message built here is passed through ``redact`` so that a key echoed
back by a server never leaks.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import re
import socket
import time
from collections.abc import Mapping
from typing import Any, Callable, Dict, Optional, Tuple
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urljoin, urlsplit

from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import Request, make_context
from ansible_collections.vastllm.stack.plugins.module_utils._retry import (
    RetryPolicy,
    call_with_retries,
)

DEFAULT_API_URL = "https://console.vast.ai"
PAGE_SIZE = 25
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5

# The vast.ai CLI's key files, newest first (see `vastai set api-key`).
KEY_FILE_RELATIVE = (os.path.join(".config", "vastai", "vast_api_key"), ".vast_api_key")


class VastAIError(Exception):
    """A failed vast.ai API call, with a message meant for the user (never holds the key)."""

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after  # the server's Retry-After, in seconds, when it sent one


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


def retryable(status: int | None, idempotent: bool = True) -> bool:
    """Whether a failed call may be sent again (how long to wait is ``_retry``'s business).

    ``status`` None means a network failure. 429, 502, 503, 504 and network failures are
    retried. A non-idempotent call (renting) is only retried on 429, which means "not
    processed": after a network failure or a 5xx the rental may have happened, and a retry
    could rent twice.
    """
    if not idempotent:
        return status == 429
    return status is None or status in RETRYABLE_STATUS


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


# A rent is `PUT /api/v0/asks/<offer id>/`; 404/410 there mean the offer is gone, not the endpoint.
_ASK_PATH = re.compile(r"/asks/([0-9]+)/")


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
    offer = _ASK_PATH.search(path)
    if offer and method == "PUT" and status in (404, 410):
        return (
            f"offer {offer.group(1)} is no longer available ({status} on {where}: rented by "
            f"someone else or withdrawn); search again{suffix}"
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
# What the client returns: never the fields that can hold secrets
# --------------------------------------------------------------------------------------

# Instance fields that can hold secrets (container env such as HF tokens, the Jupyter token,
# the onstart script, registry logins). Never cached, returned or offered to templates.
SENSITIVE_FIELDS = frozenset(
    {"extra_env", "jupyter_token", "onstart", "image_login", "instance_api_key", "api_key"}
)


def public_instance(instance: Mapping[str, Any]) -> dict[str, Any]:
    """The instance without the fields that can hold secrets."""
    return {k: v for k, v in instance.items() if k not in SENSITIVE_FIELDS}


# --------------------------------------------------------------------------------------
# HTTP edge
# --------------------------------------------------------------------------------------

# transport(method, url, headers, body, timeout) -> (status, headers, body)
Transport = Callable[
    [str, str, Dict[str, str], Optional[bytes], float], Tuple[int, Mapping[str, str], bytes]
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


def redirected(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    status: int,
    location: str,
) -> tuple[str, str, dict[str, str], bytes | None]:
    """The request to send after a redirect (pure): method, URL, headers, body.

    307/308 repeat the call as it was; 301/302/303 turn anything but HEAD into a body-less GET,
    as browsers and urllib do. The key goes along only while the redirect stays within the
    service (``_same_service``).
    """
    target = urljoin(url, location)
    new_headers = dict(headers)
    if status not in (307, 308):
        method = "GET" if method != "HEAD" else method
        body = None
        new_headers.pop("Content-Type", None)
    if not _same_service(url, target):
        new_headers.pop("Authorization", None)
    return method, target, new_headers, body


def ansible_transport(validate_certs: bool = True) -> Transport:
    """Ansible's ``Request`` with one TLS context for every call (HTTP errors -> statuses).

    Proxies from the environment (``https_proxy``...) and the CA store settings
    (``SSL_CERT_FILE``...) are honoured as by every Ansible module. Redirects are followed
    here (at most ``MAX_REDIRECTS``) so that the key never follows one out of the service.
    """
    session = Request(
        use_proxy=True,
        validate_certs=validate_certs,
        follow_redirects="none",
        context=make_context(validate_certs=validate_certs),
    )

    def _once(
        method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        try:
            response = session.open(method, url, data=body, headers=headers, timeout=timeout)
        except HTTPError as err:
            payload = err.read() if err.fp is not None else b""
            return int(err.code), dict(err.headers or {}), payload
        except UrlsConnectionError as err:
            raise URLError(str(err)) from None
        with response:
            return int(response.status), dict(response.headers), response.read()

    def _send(
        method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        for _hop in range(MAX_REDIRECTS + 1):
            status, resp_headers, payload = _once(method, url, headers, body, timeout)
            lowered = {str(k).lower(): v for k, v in resp_headers.items()}
            location = lowered.get("location")
            if status not in REDIRECT_STATUS or not location:
                return status, resp_headers, payload
            method, url, headers, body = redirected(method, url, headers, body, status, location)
        raise URLError(f"more than {MAX_REDIRECTS} redirects")

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
        jitter: float = 0.25,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not api_key:
            raise VastAIError("no vast.ai API key given")
        self._api_key = api_key
        self.api_url = normalize_api_url(api_url)
        self.timeout = timeout
        self.retries = max(0, int(retries))
        # Jitter: the inventory and several module runs share one account's rate limit; retries
        # that do not all fire at once get through sooner.
        self.policy = RetryPolicy(
            retries=self.retries,
            base=backoff,
            cap=max_backoff,
            jitter=jitter,
            max_retry_after=max_retry_after,
        )
        self._transport = transport or ansible_transport(validate_certs)
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
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

        def attempt() -> Any:
            self.requests_made += 1
            try:
                status, resp_headers, payload = self._transport(
                    method, url, headers, data, self.timeout
                )
            except (URLError, OSError, socket.timeout) as err:
                reason = getattr(err, "reason", err)
                raise VastAIError(
                    redact(
                        f"cannot reach vast.ai at {self.api_url} ({method} {short_path}): {reason}",
                        self._api_key,
                    )
                ) from None
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
            raise VastAIError(
                redact(
                    error_message(status, payload, method, short_path, retry_after),
                    self._api_key,
                ),
                status,
                retry_after,
            )

        return call_with_retries(
            attempt,
            self.policy,
            lambda error: isinstance(error, VastAIError) and retryable(error.status, idempotent),
            lambda error: error.retry_after if isinstance(error, VastAIError) else None,
            sleep=self._sleep,
            rand=self._rand,
        )

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
