"""Issue #18: requests paced as AWS meters them (kmsaudit/collect/pacing.py), with an injected
clock: evenly spread, never more than the configured rate in any one-second window, however
many callers ask at once and whenever they arrive; slower after throttling, back after success."""

from __future__ import annotations

import asyncio
import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from kmsaudit.collect.pacing import Pacer


def slots_for(
    rate: float, arrivals: list[float], together: int = 1, throttled_at: frozenset[int] = frozenset()
) -> list[float]:
    """When each request leaves: `together` callers arrive at each arrival time; sleeping moves
    the injected clock on (and a late arrival finds it later still)."""
    clock = [0.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds
        await asyncio.sleep(0)

    async def run() -> list[float]:
        pacer = Pacer(rate, clock=lambda: clock[0], sleep=sleep)
        out: list[float] = []
        for n, at in enumerate(arrivals):
            clock[0] = max(clock[0], at)
            out += await asyncio.gather(*(pacer.acquire() for _ in range(together)))
            if n in throttled_at:
                pacer.slow_down()
            else:
                pacer.recover()
        return out

    return asyncio.run(run())


def test_after_a_stall_the_waiting_requests_leave_one_by_one() -> None:
    """The event loop stalls for 2 s (a long evaluation): the requests that waited must not all
    leave together when it wakes (a catch-up burst AWS would throttle)."""
    clock = [0.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds
        await asyncio.sleep(0)

    async def run() -> list[float]:
        pacer = Pacer(10, clock=lambda: clock[0], sleep=sleep)
        first = await pacer.acquire()
        clock[0] += 2.0  # stalled: nobody ran for two seconds
        rest = await asyncio.gather(*(pacer.acquire() for _ in range(20)))
        return [first, *rest]

    slots = asyncio.run(run())
    assert most_in_one_second(slots) <= 10
    assert all(round(b - a, 9) >= 0.1 for a, b in itertools.pairwise(slots[1:]))


def most_in_one_second(slots: list[float]) -> int:
    ordered = sorted(slots)
    return max(sum(1 for t in ordered if s <= t < s + 1 - 1e-9) for s in ordered)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.5, 2000),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=60),
    together=st.integers(1, 20),
    throttled=st.frozensets(st.integers(0, 59), max_size=10),
)
def test_never_more_than_the_rate_in_any_second(
    rate: float, gaps: list[float], together: int, throttled: frozenset[int]
) -> None:
    arrivals = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    slots = slots_for(rate, arrivals, together, throttled)
    assert most_in_one_second(slots) <= math.ceil(rate)
    assert slots == sorted(slots)  # first come, first served


def test_a_crowd_is_spread_evenly_not_let_out_at_once() -> None:
    """A sliding window lets a window's worth out together; latency jitter then lands them in
    AWS's bucket as a burst (issue #18). Here 100 callers at once leave one every 1/rate s."""
    slots = slots_for(10, [0.0], together=100)
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(slots)}
    assert gaps == {0.1} and round(slots[-1], 9) == 9.9


def test_throttling_slows_down_and_success_wins_the_rate_back() -> None:
    pacer = Pacer(100)
    for _ in range(50):
        pacer.slow_down()
    assert pacer.interval == 16 * pacer.base  # a sixteenth of the rate at most
    for _ in range(1000):
        pacer.recover()
    assert pacer.interval == pacer.base  # never beyond the configured rate
