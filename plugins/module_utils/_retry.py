# -*- coding: utf-8 -*-
# Copyright: vastllm contributors
# Apache-2.0
"""The one retry/backoff rule of vastllm's modules and plugins.

Two parts, both free of I/O so they are unit-tested with literal inputs:

* ``RetryPolicy``: how many retries, exponential backoff (``base * 2**n``) capped at ``cap``,
  optional jitter (each delay shortened at random by up to ``jitter`` of itself, so clients
  that failed together do not retry together), a server ``Retry-After`` honoured up to
  ``max_retry_after`` (a longer wait gives up at once), and an optional ``deadline`` (seconds
  since the first try after which no retry starts).
* ``call_with_retries``: a tiny loop that runs a call, asks the caller whether a failure is
  worth another try, and sleeps through an injected ``sleep`` (tests pass a list's ``append``).

Used by ``ollama_api`` (Ollama REST calls), ``vastai_api`` (vast.ai REST calls) and the
``ollama_model`` module (a whole model pull that broke midway).
Python 3.8 compatible: module_utils also run on managed hosts.
"""

from __future__ import annotations

import random
import time
from typing import Callable, List, Optional, TypeVar

T = TypeVar("T")


def backoff_delay(retry: int, base: float, cap: float) -> float:
    """Delay before the ``retry``-th retry (0-based): ``base * 2**retry``, at most ``cap``."""
    if retry < 0:
        raise ValueError("retry must not be negative, got %r" % retry)
    # min() first on the exponent so a huge retry number cannot overflow
    return float(min(cap, base * (2 ** min(retry, 62))))


def jittered(delay: float, jitter: float, rand: float) -> float:
    """``delay`` shortened by ``jitter * rand`` of itself (``rand`` in [0, 1), ``jitter`` 0..1)."""
    return delay * (1.0 - jitter * rand)


class RetryPolicy:
    """When to retry and how long to wait; immutable, comparable, printable."""

    __slots__ = ("base", "cap", "deadline", "jitter", "max_retry_after", "retries")

    def __init__(
        self,
        retries: int = 3,
        base: float = 1.0,
        cap: float = 30.0,
        jitter: float = 0.0,
        max_retry_after: float = 120.0,
        deadline: Optional[float] = None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must not be negative, got %r" % retries)
        if base < 0 or cap < 0:
            raise ValueError("backoff base and cap must not be negative")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1, got %r" % jitter)
        self.retries = int(retries)
        self.base = float(base)
        self.cap = float(cap)
        self.jitter = float(jitter)
        self.max_retry_after = float(max_retry_after)
        self.deadline = None if deadline is None else float(deadline)

    def __repr__(self) -> str:
        return (
            "RetryPolicy(retries=%d, base=%r, cap=%r, jitter=%r, max_retry_after=%r, deadline=%r)"
            % (self.retries, self.base, self.cap, self.jitter, self.max_retry_after, self.deadline)
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RetryPolicy):
            return NotImplemented
        return repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))

    def delay(
        self,
        retry: int,
        elapsed: float = 0.0,
        retry_after: Optional[float] = None,
        rand: float = 0.0,
    ) -> Optional[float]:
        """Seconds to wait before the ``retry``-th retry (0-based), or None to give up.

        ``elapsed``: seconds since the first try; ``retry_after``: the server's wait, when it
        sent one (used as is, without jitter); ``rand``: a number in [0, 1) for the jitter.
        """
        if retry >= self.retries:
            return None
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            wait = max(0.0, float(retry_after))
        else:
            wait = jittered(backoff_delay(retry, self.base, self.cap), self.jitter, rand)
        if self.deadline is not None and elapsed + wait > self.deadline:
            return None
        return wait

    def schedule(self) -> List[float]:
        """Every delay without jitter, Retry-After or deadline (for docs and tests)."""
        return [backoff_delay(n, self.base, self.cap) for n in range(self.retries)]


def _no_retry_after(_error: Exception) -> Optional[float]:
    return None


def call_with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    retryable: Callable[[Exception], bool],
    retry_after: Callable[[Exception], Optional[float]] = _no_retry_after,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
) -> T:
    """Return ``call()``; on an exception that ``retryable`` accepts, wait and call again.

    The last exception is re-raised unchanged when the policy gives up (retries spent,
    Retry-After too long, deadline reached); a non-retryable exception propagates at once.
    """
    started = clock()
    retry = 0
    while True:
        try:
            return call()
        except Exception as error:
            if not retryable(error):
                raise
            wait = policy.delay(retry, clock() - started, retry_after(error), rand())
            if wait is None:
                raise
        sleep(wait)
        retry += 1
