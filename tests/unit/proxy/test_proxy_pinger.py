"""The wait for the first token (messages.Pinger) on uvloop, the proxy's loop: pings at their
interval, the first-token timeout at its time, and nothing in between."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import uvloop

from vastllm.proxy.asgi import Call
from vastllm.proxy.messages import Pinger


def call_recording(sent: list[dict[str, Any]]) -> Call:
    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    return Call({}, receive, send, "req_1", time.perf_counter(), {})


@pytest.mark.parametrize(("interval", "timeout"), [(0.07, 0.351), (0.1, 0.35), (0.05, 0.301)])
def test_pings_at_their_interval_until_the_timeout_then_the_timeout(interval, timeout):
    """No burst of pings at the deadline: uvloop's clock counts milliseconds, and a timer armed
    for the deadline may find the clock a rounding error short of it (it used to re-arm itself
    with a zero delay and ping on every loop turn until the clock ticked: 61-90 pings)."""

    async def scenario() -> tuple[int, bool, float]:
        sent: list[dict[str, Any]] = []
        pinger = None

        async def wait_for_the_first_token() -> None:
            nonlocal pinger
            pinger = Pinger(call_recording(sent), interval, lambda: [], timeout=timeout)
            await asyncio.sleep(3600)  # a backend that never answers

        started = time.monotonic()
        task = asyncio.create_task(wait_for_the_first_token())
        with pytest.raises(asyncio.CancelledError):
            await task
        took = time.monotonic() - started
        assert pinger is not None
        await pinger.stop()
        bodies = [m for m in sent if m["type"] == "http.response.body"]
        return len(bodies), pinger.timed_out(), took

    for _ in range(5):
        pings, timed_out, took = uvloop.run(scenario())
        assert timed_out
        assert timeout - 0.002 <= took < timeout + 0.25
        assert pings <= int(timeout / interval) + 1, pings
        assert pings >= int(timeout / interval) - 1, pings


def test_the_first_chunk_ends_the_timeout_and_pings_go_on_until_stop():
    async def scenario() -> tuple[int, bool]:
        sent: list[dict[str, Any]] = []
        pinger = Pinger(call_recording(sent), 0.05, lambda: [], timeout=0.08)
        pinger.arrived()
        await asyncio.sleep(0.23)  # past the timeout: nothing cancels this task
        await pinger.stop()
        count = len([m for m in sent if m["type"] == "http.response.body"])
        await asyncio.sleep(0.12)
        assert len([m for m in sent if m["type"] == "http.response.body"]) == count
        return count, pinger.timed_out()

    pings, timed_out = uvloop.run(scenario())
    assert not timed_out
    assert 3 <= pings <= 5
