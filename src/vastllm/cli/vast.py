"""The CLI's read-only vast.ai calls, over ``requests``: list the account's instances, search
offers. Everything that changes an instance (rent, start, stop, destroy) goes through the
collection's ``vastai_instance`` module (ansible-runner), which waits, re-checks the cap and names a
billed instance when something fails after a rent.

The key: ``VAST_API_KEY``, else the ``vastai`` CLI's key file — the collection's own
``resolve_api_key``. The URL: ``VAST_URL``, else the ``api_url`` setting, else console.vast.ai.
The key only ever travels in the ``Authorization`` header and is cut out of every message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from vastllm.cli.config import DEFAULT_API_URL, CliError

PAGE_SIZE = 25
TIMEOUT = 30.0


def resolve_key(environ: Mapping[str, str] | None = None) -> str:
    from ansible_collections.vastllm.stack.plugins.module_utils.vastai_api import (
        VastAIError,
        resolve_api_key,
    )

    try:
        return str(resolve_api_key(None, environ))
    except VastAIError as err:
        raise CliError(str(err.message), 2) from None


def api_url(setting: str, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    url = (env.get("VAST_URL") or setting or DEFAULT_API_URL).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CliError(f"the vast.ai URL must start with https:// or http://, got {url!r}", 2)
    return url


class VastClient:
    """GET/POST against the vast.ai REST API with retries on 429/5xx (reads only)."""

    def __init__(self, key: str, url: str) -> None:
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        self._key = key
        self.url = url
        self._session = requests.Session()
        retry = Retry(
            total=5,
            backoff_factor=0.5,
            status_forcelist=(429, 502, 503, 504),
            allowed_methods=frozenset({"GET", "POST"}),  # POST /bundles/ is a search
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        self._session.mount("http://", HTTPAdapter(max_retries=retry))
        self._session.mount("https://", HTTPAdapter(max_retries=retry))
        self._session.headers.update(
            {"Authorization": f"Bearer {key}", "Accept": "application/json",
             "User-Agent": "vastllm-cli/0.1"}
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"VastClient(url={self.url!r})"

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "<redacted>") if len(self._key) >= 4 else text

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        import requests

        try:
            resp = self._session.request(method, self.url + path, timeout=TIMEOUT, **kw)
        except requests.RequestException as err:
            raise CliError(self._redact(f"cannot reach vast.ai at {self.url}: {err}")) from None
        if resp.status_code == 401:
            raise CliError("vast.ai rejected the API key (401): check VAST_API_KEY", 2)
        if not 200 <= resp.status_code < 300:
            detail = ""
            try:
                body = resp.json()
                if isinstance(body, dict):
                    detail = str(body.get("msg") or body.get("error") or "")[:200]
            except ValueError:
                detail = resp.text[:200]
            raise CliError(
                self._redact(f"vast.ai answered {resp.status_code} on {method} {path} {detail}")
            )
        try:
            return resp.json()
        except ValueError:
            raise CliError(f"vast.ai sent a reply that is not JSON on {method} {path}") from None

    def instances(self) -> list[dict[str, Any]]:
        """Every instance of the account (v1 pages)."""
        params: dict[str, str] = {
            "select_filters": "{}",
            "order_by": json.dumps([{"col": "id", "dir": "asc"}]),
            "limit": str(PAGE_SIZE),
        }
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        while True:
            data = self._call("GET", "/api/v1/instances/", params=params)
            if not isinstance(data, dict):
                raise CliError("vast.ai's instance listing has an unexpected shape")
            rows.extend(r for r in data.get("instances") or [] if isinstance(r, dict))
            token = data.get("next_token")
            if not token or str(token) in seen:
                return rows
            seen.add(str(token))
            params["after_token"] = str(token)

    def search_offers(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        data = self._call("POST", "/api/v0/bundles/", json=dict(query))
        offers = data.get("offers") if isinstance(data, dict) else None
        return [o for o in offers or [] if isinstance(o, dict)]


def by_label(instances: list[dict[str, Any]], label: str) -> list[dict[str, Any]]:
    return [i for i in instances if str(i.get("label") or "") == label]


def with_prefix(instances: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [i for i in instances if str(i.get("label") or "").startswith(prefix)]
