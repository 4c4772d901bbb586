# -*- coding: utf-8 -*-
# Copyright: vastllm contributors
# Apache-2.0
"""A small, typed HTTP client for the Ollama REST API, on Ansible's own URL helpers.

Shared by every vastllm module that talks to Ollama. It has no AnsibleModule
dependency so it can be unit-tested directly. Requests go through
``ansible.module_utils.urls.Request``, so the proxy settings (``http_proxy``,
``https_proxy``, ``no_proxy``) and CA settings users give every other module apply here too.

* ``get_json`` / ``post_json`` / ``delete_json``: one JSON request, retried with
  exponential backoff (``_retry.RetryPolicy``) on connection errors, timeouts and HTTP 5xx;
  a ``Retry-After`` sent with a 5xx is honoured.
* ``stream_ndjson``: a streaming POST yielding one dict per NDJSON line (read line by line),
  with a per-read timeout (a stalled stream raises instead of hanging). Only the
  connection set-up is retried here; a stream that breaks midway raises
  ``OllamaUnreachable`` and the caller decides whether to start over.

Errors: ``OllamaUnreachable`` (network: refused, reset, timed out; names the URL)
and ``OllamaError`` (Ollama answered with an error status or an unreadable body).
Python 3.8 compatible: this runs on the managed host.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
from http.client import HTTPException
from typing import Any, Callable, Dict, Iterator, Optional

from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import Request
from ansible_collections.vastllm.stack.plugins.module_utils._retry import (
    RetryPolicy,
    call_with_retries,
)

DEFAULT_URL = "http://127.0.0.1:11434"


class OllamaUnreachable(Exception):
    """The Ollama server could not be reached (or the connection broke)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__("cannot reach Ollama at %s: %s" % (url, reason))
        self.url = url
        self.reason = reason


class OllamaError(Exception):
    """Ollama answered, but with an error (HTTP status >= 400 or bad body)."""

    def __init__(
        self,
        status: Optional[int],
        message: str,
        url: str = "",
        retry_after: Optional[float] = None,
    ) -> None:
        where = " (%s)" % url if url else ""
        prefix = "HTTP %d" % status if status is not None else "bad response"
        super().__init__("Ollama %s%s: %s" % (prefix, where, message))
        self.status = status
        self.message = message
        self.url = url
        self.retry_after = retry_after


def _error_message(body: bytes) -> str:
    """Ollama error bodies are ``{"error": "..."}``; fall back to the raw text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500] or "(empty body)"
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return text[:500]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason
        if isinstance(reason, BaseException):
            return _describe(reason)
        return str(reason)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc)
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


MAX_BACKOFF = 30.0
NETWORK_ERRORS = (urllib.error.URLError, OSError, HTTPException, UrlsConnectionError)


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Delta-seconds of a ``Retry-After`` header (Ollama sends no dates); None if absent/bad."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _retryable(error: Exception) -> bool:
    """Network failures and 5xx answers are worth another try; 4xx and bad bodies are not."""
    if isinstance(error, OllamaUnreachable):
        return True
    return isinstance(error, OllamaError) and error.status is not None and error.status >= 500


def _server_wait(error: Exception) -> Optional[float]:
    return error.retry_after if isinstance(error, OllamaError) else None


class OllamaClient:
    """Thin client: ``OllamaClient("http://127.0.0.1:11434").get_json("/api/tags")``."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        timeout: float = 30.0,
        retries: int = 3,
        retry_delay: float = 1.0,
        insecure: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parsed = urllib.parse.urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("ollama_url must be an http(s) URL, got %r" % base_url)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.retry_delay = max(0.0, float(retry_delay))
        self.policy = RetryPolicy(retries=self.retries, base=self.retry_delay, cap=MAX_BACKOFF)
        self._sleep = sleep
        # One Request for the client: defaults shared by every call (proxy from the
        # environment, certificate checks unless ``insecure``).
        self._http = Request(
            headers={"Accept": "application/json"},
            use_proxy=True,
            validate_certs=not insecure,
            http_agent="vastllm-ansible",
        )

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    def _open(self, method: str, path: str, body: Optional[Dict[str, Any]], timeout: float) -> Any:
        """One HTTP exchange; HTTP errors and network failures become our two error classes."""
        data = None
        headers = {}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            return self._http.open(
                method, self.url(path), data=data, headers=headers, timeout=timeout
            )
        except urllib.error.HTTPError as exc:
            message = _error_message(exc.read() or b"")
            wait = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            raise OllamaError(exc.code, message, "%s %s" % (method, path), wait) from None
        except NETWORK_ERRORS as exc:
            raise OllamaUnreachable(self.base_url, _describe(exc)) from None

    def _with_retries(self, call: Callable[[], Any], retries: Optional[int] = None) -> Any:
        """Run ``call``; retry on network errors and 5xx; raise the clear error."""
        policy = self.policy
        if retries is not None:
            policy = RetryPolicy(retries=max(0, retries), base=self.retry_delay, cap=MAX_BACKOFF)
        return call_with_retries(call, policy, _retryable, _server_wait, sleep=self._sleep)

    def request_json(
        self,
        method: str,
        path: str,
        body: Optional[Dict[str, Any]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """One request; returns the decoded JSON body (None for an empty body)."""
        wait = self.timeout if timeout is None else timeout

        def call() -> bytes:
            response = self._open(method, path, body, wait)
            try:
                payload: bytes = response.read()
            except NETWORK_ERRORS as exc:
                raise OllamaUnreachable(self.base_url, _describe(exc)) from None
            finally:
                response.close()
            return payload

        raw = self._with_retries(call)
        if not raw.strip():
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except ValueError:
            raise OllamaError(
                None, "body is not JSON: %r" % raw[:200], "%s %s" % (method, path)
            ) from None

    def get_json(self, path: str, timeout: Optional[float] = None) -> Any:
        return self.request_json("GET", path, None, timeout)

    def post_json(self, path: str, body: Dict[str, Any], timeout: Optional[float] = None) -> Any:
        return self.request_json("POST", path, body, timeout)

    def delete_json(self, path: str, body: Dict[str, Any], timeout: Optional[float] = None) -> Any:
        return self.request_json("DELETE", path, body, timeout)

    def stream_ndjson(
        self,
        path: str,
        body: Dict[str, Any],
        read_timeout: float = 300.0,
        retries: Optional[int] = None,
    ) -> Iterator[Dict[str, Any]]:
        """POST and yield each NDJSON line as a dict.

        ``read_timeout`` bounds every single read: a stream that sends nothing for
        that long raises ``OllamaUnreachable``. Lines that are not JSON objects
        raise ``OllamaError``. The caller reads ``error`` / ``status`` itself: an
        HTTP 200 stream can still end in ``{"error": ...}``. ``retries`` overrides the
        client's retry count for the connection set-up (0 when the caller retries itself).
        """
        response = self._with_retries(lambda: self._open("POST", path, body, read_timeout), retries)
        try:
            while True:
                try:
                    raw = response.readline()
                except NETWORK_ERRORS as exc:
                    raise OllamaUnreachable(
                        self.base_url, "stream broke: %s" % _describe(exc)
                    ) from None
                if not raw:
                    return
                text = raw.decode("utf-8", "replace").strip()
                if not text:
                    continue
                try:
                    item = json.loads(text)
                except ValueError:
                    raise OllamaError(
                        None, "stream line is not JSON: %r" % text[:200], "POST %s" % path
                    ) from None
                if not isinstance(item, dict):
                    raise OllamaError(
                        None, "stream line is not an object: %r" % text[:200], "POST %s" % path
                    )
                yield item
        finally:
            response.close()
