"""The backend the proxy answers from: Ollama's HTTP API, behind a small Protocol.

The routes use only ``Backend`` and ``ChatReply`` (and the ``BackendError`` family of
``errors.py``); ``OllamaBackend`` implements them on the keep-alive HTTP/1.1 client of
``upstream.py``. Another HTTP client, or a test double (``create_app(settings, backend=...)``),
replaces this class and nothing else: no route sees a socket, a status line or NDJSON framing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import orjson

from vastllm.proxy.config import Settings
from vastllm.proxy.errors import (
    BackendBadReply,
    BackendConnectionLost,
    BackendError,
    BackendStatus,
    BackendTimeout,
    BackendUnreachable,
)
from vastllm.proxy.upstream import (
    ConnectFailed,
    ConnectionLost,
    Response,
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
)

Chunk = dict[str, Any]

INFO_TIMEOUT = 2.0  # seconds for the small calls: version, tags, ps, show
DRAIN_TIMEOUT = 1.0  # seconds to read what follows the final chunk of a streamed answer


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


def _transport(exc: UpstreamError) -> BackendError:
    """The client's failure → the backend failure the routes know."""
    if isinstance(exc, ConnectFailed):
        return BackendUnreachable(str(exc))
    if isinstance(exc, UpstreamTimeout):
        return BackendTimeout(str(exc))
    if isinstance(exc, ConnectionLost):
        return BackendConnectionLost(str(exc))
    return BackendError(str(exc))


class _OllamaReply:
    """``ChatReply`` over one ``upstream.Response``."""

    __slots__ = ("_response",)

    def __init__(self, response: Response) -> None:
        self._response = response

    async def json(self) -> Chunk:
        try:
            body = await self._response.read()
        except UpstreamError as exc:
            raise _transport(exc) from None
        return parse_chunk(body)

    async def batches(self) -> AsyncIterator[Iterator[Chunk]]:
        buffer = b""
        try:
            async for raw in self._response.iter_chunks():
                buffer += raw
                if b"\n" not in buffer:
                    continue
                *lines, buffer = buffer.split(b"\n")
                yield (parse_chunk(line) for line in lines if line.strip())
        except UpstreamError as exc:
            raise _transport(exc) from None
        if buffer.strip():
            yield (parse_chunk(line) for line in (buffer,))

    async def finish(self) -> None:
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                async for _chunk in self._response.iter_chunks():
                    pass
        except (UpstreamError, TimeoutError):
            self._response.close()

    def close(self) -> None:
        self._response.close()


class OllamaBackend:
    """``Backend`` on Ollama's HTTP API, with a pool of keep-alive connections."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        info_timeout: float = INFO_TIMEOUT,
    ) -> None:
        self.url = url
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._info_timeout = info_timeout
        self._pool: UpstreamPool | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OllamaBackend:
        return cls(
            settings.ollama_url,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
        )

    async def start(self) -> None:
        self._pool = UpstreamPool(self.url, self._connect_timeout, self._read_timeout)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def _started(self) -> UpstreamPool:
        if self._pool is None:
            raise RuntimeError("OllamaBackend used before start()")
        return self._pool

    async def chat(self, body: dict[str, Any]) -> ChatReply:
        try:
            response = await self._started().request("POST", "/api/chat", orjson.dumps(body))
        except UpstreamError as exc:
            raise _transport(exc) from None
        if response.status != 200:
            try:
                detail = await response.read()
            except UpstreamError:
                detail = b""
            finally:
                response.close()
            raise BackendStatus(response.status, error_detail(detail))
        return _OllamaReply(response)

    async def _info(self, method: str, path: str, body: Any = None) -> Any:
        """A small API call with the short timeout; the decoded JSON answer."""
        pool = self._started()
        payload = None if body is None else orjson.dumps(body)
        try:
            async with asyncio.timeout(self._info_timeout + 1):
                response = await pool.request(method, path, payload, timeout=self._info_timeout)
                data = await response.read()
        except UpstreamError as exc:
            raise _transport(exc) from None
        except TimeoutError:
            raise BackendTimeout(f"no answer from {path} in time") from None
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
