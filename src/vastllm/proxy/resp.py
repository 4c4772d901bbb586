"""A minimal asyncio Redis client (RESP2) for the cache: GET, SET with EX, PING.

redis-py's asyncio client spent ~100 µs of CPU per command here (connection pool bookkeeping,
instrumentation); this one ~25 µs. It supports what ``VASTLLM_REDIS_URL`` may say:
``redis://[user:password@]host[:port][/db]``, ``rediss://`` (TLS) and
``unix:///path/to/socket[?db=N&password=...]``.

The command timeout is kept by one watchdog timer per client, not a timer per command: each
command notes its deadline; every ``timeout / 4`` s, while commands are in flight, the
watchdog aborts the connection of any command past its deadline, and that command fails with
"Redis timed out" (so a timeout fires between ``timeout`` and ``1.25 * timeout``). An
``asyncio.timeout`` per command cost ~8 µs of CPU, two per cache miss (issue 8).
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import parse_qs, unquote, urlsplit

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class RedisError(Exception):
    """Redis could not be used (connection, timeout, protocol or a Redis error reply)."""


class RedisConnectionLost(RedisError):
    """The connection was closed or reset under the command (e.g. Redis restarted)."""


def _pack(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class RespClient:
    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 0.5,
        timeout: float = 1.0,
        max_idle: int = 64,
    ) -> None:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self._unix_path: str | None = None
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "unix":
            self._unix_path = parts.path
            db = query.get("db", ["0"])[0]
        else:
            self.host = parts.hostname or "127.0.0.1"
            self.port = parts.port or 6379
            if parts.scheme == "rediss":
                self._ssl = ssl.create_default_context()
            db = parts.path.lstrip("/") or query.get("db", ["0"])[0]
        password = parts.password or query.get("password", [None])[0]
        self._password = unquote(password) if password else None
        self._username = unquote(parts.username) if parts.username else None
        try:
            self._db = int(db)
        except ValueError:
            raise ValueError(f"invalid Redis database number {db!r}") from None
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._max_idle = max_idle
        self._idle: list[Stream] = []
        # The watchdog: deadline of each connection with a command in flight; the connections
        # it aborted; its timer while commands are in flight.
        self._deadlines: dict[asyncio.StreamWriter, float] = {}
        self._expired: set[asyncio.StreamWriter] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_loop: asyncio.AbstractEventLoop | None = None
        self._tick = max(timeout / 4, 0.01)

    async def _connect(self) -> Stream:
        try:
            async with asyncio.timeout(self._connect_timeout):
                if self._unix_path is not None:
                    stream = await asyncio.open_unix_connection(self._unix_path)
                else:
                    stream = await asyncio.open_connection(self.host, self.port, ssl=self._ssl)
        except (OSError, TimeoutError) as exc:
            raise RedisError(f"cannot connect to Redis: {exc or type(exc).__name__}") from None
        try:
            if self._password is not None:
                auth = [b"AUTH", self._password.encode()]
                if self._username:
                    auth.insert(1, self._username.encode())
                await self._exchange(stream, _pack(*auth))
            if self._db:
                await self._exchange(stream, _pack(b"SELECT", str(self._db).encode()))
        except BaseException:
            stream[1].close()
            raise
        return stream

    def _watch(self, writer: asyncio.StreamWriter) -> None:
        """Note the deadline of a command about to be sent on ``writer``."""
        loop = asyncio.get_running_loop()
        self._deadlines[writer] = loop.time() + self._timeout
        if self._watchdog is None or self._watchdog_loop is not loop:
            # (a client used from another loop: the old loop's timer will never run there)
            self._watchdog_loop = loop
            self._watchdog = loop.call_later(self._tick, self._check_deadlines, loop)

    def _check_deadlines(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._watchdog_loop:
            return  # a timer of a loop the client has left
        self._watchdog = None
        now = loop.time()
        for writer, deadline in list(self._deadlines.items()):
            if now >= deadline:
                del self._deadlines[writer]
                self._expired.add(writer)
                writer.transport.abort()  # the command's read ends: "Redis timed out"
        if self._deadlines:
            self._watchdog = loop.call_later(self._tick, self._check_deadlines, loop)

    async def _exchange(self, stream: Stream, payload: bytes) -> bytes | int | None:
        reader, writer = stream
        self._watch(writer)
        try:
            writer.write(payload)
            line = await reader.readuntil(b"\r\n")
            kind, rest = line[:1], line[1:-2]
            if kind == b"$":
                size = int(rest)
                if size < 0:
                    return None
                return (await reader.readexactly(size + 2))[:-2]
            if kind == b"+":
                return rest
            if kind == b":":
                return int(rest)
        except (OSError, asyncio.IncompleteReadError):
            if writer in self._expired:
                self._expired.discard(writer)
                raise RedisError("Redis timed out") from None
            raise RedisConnectionLost("Redis connection lost") from None
        except (asyncio.LimitOverrunError, ValueError):
            raise RedisError("unexpected Redis reply") from None
        finally:
            self._deadlines.pop(writer, None)
            self._expired.discard(writer)
        if kind == b"-":
            raise RedisError("Redis error: " + rest.decode(errors="replace"))
        raise RedisError("unexpected Redis reply")

    async def command(self, *args: bytes) -> bytes | int | None:
        """Send one command and return its reply.

        A pooled connection may have been closed while it sat idle (Redis restarted, or closed
        idle clients) without the loop having noticed yet. When such a reused connection turns
        out lost, the other idle ones are dropped too (they share its fate) and the command is
        sent once more, at once, on a new connection. A timeout is never retried (a hung Redis
        would cost twice), nor is a failure on a new connection.
        """
        payload = _pack(*args)
        stream = None
        while self._idle and stream is None:
            candidate = self._idle.pop()
            if candidate[0].at_eof() or candidate[1].is_closing():
                candidate[1].close()
            else:
                stream = candidate
        if stream is not None:
            try:
                return self._release(stream, await self._exchange(stream, payload))
            except RedisConnectionLost:
                stream[1].close()
                self._drop_idle()
            except BaseException:
                stream[1].close()  # its state is unknown (or a cancelled exchange)
                raise
        stream = await self._connect()
        try:
            reply = await self._exchange(stream, payload)
        except BaseException:
            stream[1].close()  # its state is unknown (or a cancelled exchange): never reuse it
            raise
        return self._release(stream, reply)

    def _release(self, stream: Stream, reply: bytes | int | None) -> bytes | int | None:
        if len(self._idle) < self._max_idle:
            self._idle.append(stream)
        else:
            stream[1].close()
        return reply

    def _drop_idle(self) -> None:
        while self._idle:
            self._idle.pop()[1].close()

    async def get(self, key: str) -> bytes | None:
        reply = await self.command(b"GET", key.encode())
        return reply if isinstance(reply, bytes) else None

    async def set(self, key: str, value: bytes, ex: int) -> None:
        await self.command(b"SET", key.encode(), value, b"EX", str(ex).encode())

    async def ping(self) -> bool:
        return await self.command(b"PING") == b"PONG"

    async def aclose(self) -> None:
        self._drop_idle()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
