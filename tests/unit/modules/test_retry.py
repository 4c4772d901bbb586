"""The one retry/backoff helper (plugins/module_utils/_retry.py): literal inputs, no sleeping."""

from __future__ import annotations

import pytest
from ansible_collections.vastllm.stack.plugins.module_utils._retry import (
    RetryPolicy,
    backoff_delay,
    call_with_retries,
    jittered,
)


@pytest.mark.parametrize(
    ("retry", "base", "cap", "expected"),
    [(0, 1.0, 30.0, 1.0), (1, 1.0, 30.0, 2.0), (3, 2.0, 30.0, 16.0), (4, 2.0, 30.0, 30.0)],
)
def test_backoff_doubles_and_is_capped(retry, base, cap, expected):
    assert backoff_delay(retry, base, cap) == expected


def test_backoff_of_a_huge_retry_number_is_the_cap():
    assert backoff_delay(10_000, 1.0, 30.0) == 30.0


def test_jitter_shortens_by_at_most_its_fraction():
    assert jittered(10.0, 0.25, 0.0) == 10.0
    assert jittered(10.0, 0.25, 0.5) == 8.75
    assert jittered(10.0, 0.25, 0.999) > 7.5


def test_policy_schedule_and_give_up():
    policy = RetryPolicy(retries=4, base=0.5, cap=3.0)
    assert policy.schedule() == [0.5, 1.0, 2.0, 3.0]
    assert policy.delay(3) == 3.0
    assert policy.delay(4) is None  # retries spent


def test_retry_after_is_used_as_sent_unless_too_long():
    policy = RetryPolicy(retries=3, base=1.0, max_retry_after=60.0, jitter=0.5)
    assert policy.delay(0, retry_after=7.0, rand=0.9) == 7.0  # no jitter on the server's wait
    assert policy.delay(0, retry_after=0.0) == 0.0
    assert policy.delay(0, retry_after=61.0) is None  # a longer wait fails at once


def test_deadline_stops_a_retry_that_would_end_after_it():
    policy = RetryPolicy(retries=9, base=4.0, cap=30.0, deadline=10.0)
    assert policy.delay(0, elapsed=5.0) == 4.0
    assert policy.delay(1, elapsed=5.0) is None  # 5 + 8 > 10
    assert policy.delay(0, elapsed=7.0, retry_after=5.0) is None


@pytest.mark.parametrize(
    "kwargs", [{"retries": -1}, {"base": -1.0}, {"jitter": 1.5}, {"jitter": -0.1}]
)
def test_invalid_policies_are_refused(kwargs):
    with pytest.raises(ValueError):  # noqa: PT011 - the message is the policy's own
        RetryPolicy(**kwargs)


def test_policies_compare_by_value():
    assert RetryPolicy(retries=2, base=1) == RetryPolicy(retries=2, base=1.0)
    assert RetryPolicy(retries=2) != RetryPolicy(retries=3)


class Flaky(Exception):
    pass


def _script(*outcomes):
    """A call that raises or returns the given outcomes in turn, counting its calls."""
    calls = []

    def call():
        calls.append(len(calls))
        outcome = outcomes[len(calls) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return call, calls


def test_loop_retries_retryable_errors_then_returns():
    call, calls = _script(Flaky(), Flaky(), "ok")
    sleeps: list[float] = []
    result = call_with_retries(
        call,
        RetryPolicy(retries=3, base=1.0),
        lambda e: isinstance(e, Flaky),
        sleep=sleeps.append,
        rand=lambda: 0.0,
    )
    assert result == "ok"
    assert len(calls) == 3
    assert sleeps == [1.0, 2.0]


def test_loop_reraises_the_last_error_when_retries_are_spent():
    last = Flaky("third")
    call, _calls = _script(Flaky("first"), Flaky("second"), last)
    sleeps: list[float] = []
    with pytest.raises(Flaky) as info:
        call_with_retries(
            call, RetryPolicy(retries=2, base=0.1), lambda e: True, sleep=sleeps.append
        )
    assert info.value is last
    assert sleeps == [0.1, 0.2]


def test_loop_does_not_retry_what_the_caller_says_is_final():
    call, calls = _script(KeyError("final"), "never")
    sleeps: list[float] = []
    with pytest.raises(KeyError):
        call_with_retries(call, RetryPolicy(retries=5), lambda e: False, sleep=sleeps.append)
    assert calls == [0]
    assert sleeps == []


def test_loop_honours_retry_after_and_the_deadline_on_an_injected_clock():
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    call, calls = _script(Flaky(), Flaky(), Flaky(), "late")
    with pytest.raises(Flaky):
        call_with_retries(
            call,
            RetryPolicy(retries=5, base=1.0, deadline=10.0),
            lambda e: True,
            retry_after=lambda e: 4.0,
            sleep=sleep,
            clock=lambda: now[0],
        )
    assert len(calls) == 3  # waits 4 + 4; a third wait would end at 12 > 10
    assert now[0] == 8.0


def test_loop_applies_jitter_from_the_injected_random_source():
    call, _ = _script(Flaky(), "ok")
    sleeps: list[float] = []
    call_with_retries(
        call,
        RetryPolicy(retries=1, base=2.0, jitter=0.5),
        lambda e: True,
        sleep=sleeps.append,
        rand=lambda: 0.5,
    )
    assert sleeps == [1.5]
