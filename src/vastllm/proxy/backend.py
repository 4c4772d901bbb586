"""The backend the proxy answers from: Ollama's HTTP API, behind a small Protocol.

The routes use only ``Backend`` and ``ChatReply`` (and the ``BackendError`` family of
``errors.py``); ``OllamaBackend`` implements them on one ``aiohttp.ClientSession`` (a keep-alive
connection pool). Another HTTP client, or a test double (``create_app(settings, backend=...)``),
replaces this class and nothing else: no route sees a socket, a status line or NDJSON framing.

What the client guarantees (tests/unit/proxy/test_proxy_backend.py): ``1xx`` interim answers
are skipped; credentials in the Ollama URL are sent as Basic auth (and kept out of every URL the
proxy shows); ``POST /api/chat`` is never sent twice (only a connect failure, before anything
was sent, is retried, once); the read timeout is an idle-read timeout (``sock_read``), over TLS
too; closing a reply before its end drops the connection, which makes Ollama stop generating.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
import orjson
from yarl import URL

from vastllm.proxy.config import Settings
from vastllm.proxy.errors import (
    BackendBadReply,
    BackendConnectionLost,
    BackendError,
    BackendStatus,
    BackendTimeout,
    BackendUnreachable,
)

Chunk = dict[str, Any]

INFO_TIMEOUT = 2.0  # seconds for the small calls: version, tags, ps, show
DRAIN_TIMEOUT = 1.0  # seconds to read what follows the final chunk of a streamed answer

# Cost per miss (issue 8, "Performance"), profiled end to end with py-spy, cProfile, perf and
# valgrind: ~75 % of the proxy's CPU is Python bytecode, ~11 % kernel. aiohttp's share is its
# fixed work per request (a ClientRequest, and on Python 3.11 a Task that writes the body) and,
# streamed, its bookkeeping per HTTP chunk (Ollama sends each token as one: feed_data,
# end_http_chunk_receiving, resume_reading each time), neither reachable through its public API.
# Here: ``_Batches`` is a class, not an async generator (one left at the final chunk was closed by
# the loop in a task of its own, via call_soon_threadsafe, for every streamed answer); ``finish``
# arms no timer when the end came with the final chunk (an asyncio.timeout costs ~8 µs on
# uvloop); chunks are decoded through map/filter. With server.py's GC tuning and head timer,
# measured on the 2-CPU VM:
#   instructions per miss, C=1 (.venv/bin/python benchmarks/proxy_bench.py --instructions 150;
#   two runs agree within ~1.5 %): non-streamed 945 k -> 932 k, streamed 1,631 k -> 1,555 k;
#   proxy CPU per miss at C=32, old and new tree alternating in one run (6 rounds of 1,000,
#   median, load average ~5): non-streamed 0.615 -> 0.535 ms, streamed 0.925 -> 0.775 ms.


class ChatReply(Protocol):
    """A 200 answer of the chat endpoint, its body still to be read; ``close`` it at the end."""

    async def json(self) -> Chunk:
        """The whole (non-streamed) answer, decoded. Raises ``BackendError``: ``BackendBadReply``
        when it is not a JSON object or reports an error."""
        ...

    def batches(self) -> AsyncIterator[Iterator[Chunk]]:
        """The streamed answer as it arrives: for each network read, the chunks complete in it,
        decoded as they are taken (a chunk that is not a JSON object or reports an error raises
        ``BackendBadReply`` then). Raises ``BackendTimeout`` or ``BackendConnectionLost``."""
        ...

    async def finish(self) -> None:
        """Read what follows the final chunk (briefly), so the connection can be reused."""
        ...

    def close(self) -> None:
        """Release the reply. Before its end this drops the connection: generation stops."""
        ...


class Backend(Protocol):
    """What the proxy needs of a model server. Every call raises ``BackendError`` on failure."""

    async def start(self) -> None:
        """Open clients (called by the ASGI lifespan, in the serving loop)."""
        ...

    async def close(self) -> None:
        """Close clients (called by the ASGI lifespan at shutdown)."""
        ...

    async def chat(self, body: dict[str, Any]) -> ChatReply:
        """Send an Ollama ``/api/chat`` body. Another status than 200 raises ``BackendStatus``
        with the backend's error message."""
        ...

    async def model_names(self) -> list[str]:
        """The installed models, named as Ollama's ``/api/tags`` lists them."""
        ...

    async def loaded_model_names(self) -> list[str]:
        """The models in memory (``/api/ps``)."""
        ...

    async def version(self) -> str | None:
        """The backend's version (``/api/version``); None when it does not say."""
        ...

    async def capabilities(self, model: str) -> list[str]:
        """What ``model`` can do (``/api/show`` capabilities, e.g. ``thinking``, ``tools``)."""
        ...

    async def context_length(self, model: str) -> int | None:
        """The longest context ``model`` takes (``/api/show`` ``model_info``
        ``<family>.context_length``); None when it does not say."""
        ...

    async def loaded_context_lengths(self) -> dict[str, int]:
        """The context length each loaded model was loaded with (``/api/ps``)."""
        ...


# --------------------------------------------------------------------------- Ollama wire


def parse_chunk(line: bytes) -> Chunk:
    """One Ollama JSON answer or NDJSON chunk; ``BackendBadReply`` if it is not a JSON object
    (``bad_chunk``) or carries an ``error`` (``stream_error``)."""
    try:
        chunk = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise BackendBadReply("bad_chunk", "backend sent malformed data") from None
    if not isinstance(chunk, dict):
        raise BackendBadReply("bad_chunk", "backend sent malformed data")
    if "error" in chunk:
        raise BackendBadReply("stream_error", str(chunk["error"])[:500])
    return chunk


def error_detail(body: bytes) -> str:
    """The message of an Ollama error answer (``{"error": "..."}``), short and printable."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode(errors="replace").strip() or "no detail"
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])[:500]
    return "no detail"


def _names(listing: Any) -> list[str]:
    """The model names of an ``/api/tags`` or ``/api/ps`` answer."""
    models = (listing.get("models") or []) if isinstance(listing, dict) else None
    if not isinstance(models, list):
        raise BackendBadReply("bad_chunk", "backend sent a malformed model list")
    return [str(item.get("name") or item.get("model")) for item in models if isinstance(item, dict)]


def _positive(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def show_context_length(show: Any) -> int | None:
    """``model_info`` ``<family>.context_length`` of an ``/api/show`` answer."""
    info = show.get("model_info") if isinstance(show, dict) else None
    if not isinstance(info, dict):
        return None
    for key, value in info.items():
        if isinstance(key, str) and key.endswith(".context_length") and _positive(value):
            return int(value)
    return None


def ps_context_lengths(listing: Any) -> dict[str, int]:
    """Model name → ``context_length`` of an ``/api/ps`` answer (models that report one)."""
    models = listing.get("models") if isinstance(listing, dict) else None
    found: dict[str, int] = {}
    for item in models if isinstance(models, list) else ():
        if isinstance(item, dict):
            name = item.get("name") or item.get("model")
            length = _positive(item.get("context_length"))
            if isinstance(name, str) and length is not None:
                found[name] = length
    return found


def _transport(exc: BaseException) -> BackendError:
    """The HTTP client's failure → the backend failure the routes know (no URL in the text:
    it could carry credentials)."""
    if isinstance(exc, aiohttp.ServerTimeoutError):  # sock_read: the backend went silent
        return BackendTimeout("backend read timed out")
    if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError):
        return BackendUnreachable("cannot connect to the backend")
    if isinstance(exc, asyncio.TimeoutError):
        return BackendTimeout("backend did not answer in time")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return BackendConnectionLost("backend connection lost")
    return BackendError("backend failed")


_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class _Batches:
    """The async iterator of ``_OllamaReply.batches``: a class, not an async generator. An
    async generator left before its end (the proxy stops reading at the final chunk) is closed
    by the event loop in a task of its own, one per streamed answer; this needs none."""

    __slots__ = ("_content", "_ended", "_rest")

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content
        self._rest = b""  # the start of a line whose end has not arrived yet
        self._ended = False

    def __aiter__(self) -> _Batches:
        return self

    async def __anext__(self) -> Iterator[Chunk]:
        content = self._content
        while not self._ended:
            try:
                raw = await content.readany()  # what arrived, one HTTP chunk or many: b"" at EOF
            except _FAILURES as exc:
                self._ended = True
                raise _transport(exc) from None
            if not raw:
                self._ended = True
                rest, self._rest = self._rest, b""
                if rest.strip():
                    return map(parse_chunk, (rest,))
                break
            if b"\n" not in raw:
                self._rest += raw
                continue
            lines = raw.split(b"\n")
            if self._rest:
                lines[0] = self._rest + lines[0]
            self._rest = lines.pop()
            # Decoded as they are taken; blank lines skipped (bytes.strip: b"" is false).
            return map(parse_chunk, filter(bytes.strip, lines))
        raise StopAsyncIteration


class _OllamaReply:
    """``ChatReply`` over one ``aiohttp.ClientResponse``."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def json(self) -> Chunk:
        try:
            body = await self._response.read()
        except _FAILURES as exc:
            raise _transport(exc) from None
        return parse_chunk(body)

    def batches(self) -> AsyncIterator[Iterator[Chunk]]:
        return _Batches(self._response.content)

    async def finish(self) -> None:
        response = self._response
        if response.content.is_eof():  # the end came with the final chunk (the usual case)
            response.release()
            return
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await response.read()
        except (*_FAILURES, TimeoutError):
            response.close()
        else:
            response.release()

    def close(self) -> None:
        """Drop the connection unless the body was read whole (then it is back in the pool)."""
        self._response.close()


def split_credentials(url: str) -> tuple[str, str | None]:
    """``https://user:pass@host/x`` → (``https://host/x``, the ``Authorization`` value of Basic
    auth for user:pass; percent-escapes decoded)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url.rstrip("/"), None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return bare.rstrip("/"), "Basic " + base64.b64encode(pair.encode()).decode("ascii")


class OllamaBackend:
    """``Backend`` on Ollama's HTTP API: one aiohttp session, a pool of keep-alive connections."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        info_timeout: float = INFO_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._base, self._auth = split_credentials(url)
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._info_timeout = info_timeout
        # URLs parsed once (yarl), not per request.
        self._chat_url = URL(self._base + "/api/chat")
        # Idle-read timeout: the longest silence between two reads of an answer (head or body).
        self._chat_timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self._info_timeouts = aiohttp.ClientTimeout(
            total=info_timeout, connect=min(connect_timeout, info_timeout)
        )
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        """The backend's base URL, without credentials."""
        return self._base

    @classmethod
    def from_settings(cls, settings: Settings) -> OllamaBackend:
        return cls(
            settings.ollama_url,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
        )

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0, keepalive_timeout=30, ttl_dns_cache=60, ssl=self._ssl
        )
        headers = {"content-type": "application/json"}
        if self._auth is not None:
            headers["authorization"] = self._auth
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            skip_auto_headers=("user-agent", "accept-encoding"),
            auto_decompress=False,
            trust_env=False,
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _started(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("OllamaBackend used before start()")
        return self._session

    async def _send(
        self, method: str, url: URL, payload: bytes | None, timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        """One request. A connect failure (nothing was sent) is tried once more; a failure
        after that is not: the backend may have the request already (no generation twice)."""
        session = self._started()
        for attempt in (1, 2):
            try:
                return await session.request(method, url, data=payload, timeout=timeout)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                if attempt == 2 or isinstance(exc, aiohttp.ClientConnectorCertificateError):
                    raise _transport(exc) from None
            except _FAILURES as exc:
                raise _transport(exc) from None
        raise BackendUnreachable("cannot connect to the backend")  # pragma: no cover

    async def chat(self, body: dict[str, Any]) -> ChatReply:
        response = await self._send("POST", self._chat_url, orjson.dumps(body), self._chat_timeout)
        if response.status != 200:
            try:
                detail = await response.read()
            except _FAILURES:
                detail = b""
            finally:
                response.close()
            raise BackendStatus(response.status, error_detail(detail))
        return _OllamaReply(response)

    async def _info(self, method: str, path: str, body: Any = None) -> Any:
        """A small API call with the short timeout; the decoded JSON answer."""
        payload = None if body is None else orjson.dumps(body)
        response = await self._send(method, URL(self._base + path), payload, self._info_timeouts)
        try:
            data = await response.read()
        except _FAILURES as exc:
            response.close()
            raise _transport(exc) from None
        if response.status != 200:
            raise BackendStatus(response.status, error_detail(data))
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise BackendBadReply("bad_chunk", f"malformed JSON from {path}") from None

    async def model_names(self) -> list[str]:
        return _names(await self._info("GET", "/api/tags"))

    async def loaded_model_names(self) -> list[str]:
        return _names(await self._info("GET", "/api/ps"))

    async def version(self) -> str | None:
        data = await self._info("GET", "/api/version")
        version = data.get("version") if isinstance(data, dict) else None
        return version if isinstance(version, str) else None

    async def capabilities(self, model: str) -> list[str]:
        data = await self._info("POST", "/api/show", {"model": model})
        capabilities = data.get("capabilities") if isinstance(data, dict) else None
        if not isinstance(capabilities, list):
            return []
        return [str(item) for item in capabilities]

    async def context_length(self, model: str) -> int | None:
        return show_context_length(await self._info("POST", "/api/show", {"model": model}))

    async def loaded_context_lengths(self) -> dict[str, int]:
        return ps_context_lengths(await self._info("GET", "/api/ps"))
