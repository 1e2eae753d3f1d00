"""Issue #24, defect 8: four slow or throttled scopes took every request slot, and a healthy
scope's request waited 2.8 s. A scope's share shrinks when others wait (kmsaudit/collect/slots.py)."""

from __future__ import annotations

import asyncio

from kmsaudit.collect.slots import FairSlots


async def _hold(slots: FairSlots, scope: tuple[str, str], started: list[tuple[str, str]], until: asyncio.Event) -> None:
    async with slots.hold(scope):
        started.append(scope)
        await until.wait()


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_healthy_scope_starts_at_once_while_four_throttled_scopes_hold_what_they_can() -> None:
    slots = FairSlots(64)
    stuck = asyncio.Event()  # throttled: their calls sleep in botocore's backoff
    started: list[tuple[str, str]] = []
    slow = [(f"11112222333{i}", "us-east-1") for i in range(4)]
    tasks = [asyncio.create_task(_hold(slots, s, started, stuck)) for s in slow for _ in range(40)]
    await _settle()
    assert len(started) < 64 and slots.free > 0  # they asked for 160; some slots are kept
    healthy = ("999988887777", "eu-west-1")
    done = asyncio.Event()
    mine = [asyncio.create_task(_hold(slots, healthy, started, done)) for _ in range(3)]
    await _settle()
    assert started.count(healthy) >= 1  # started without any throttled call ending
    stuck.set()
    done.set()
    await asyncio.gather(*tasks, *mine)
    assert slots.free == 64 and slots.held == {}


async def test_a_freed_slot_goes_to_the_waiting_scope_holding_fewest() -> None:
    slots = FairSlots(8)  # cap 2 per scope, 1 slot kept
    release = {s: asyncio.Event() for s in ("a", "b", "c", "d", "e")}
    started: list[tuple[str, str]] = []
    tasks = [
        asyncio.create_task(_hold(slots, (s, "r"), started, release[s])) for s in ("a", "b", "c", "d") for _ in range(3)
    ]
    await _settle()
    assert slots.free == 0 or all(slots.held.get((s, "r"), 0) <= 2 for s in "abcd")
    newcomer = asyncio.create_task(_hold(slots, ("e", "r"), started, release["e"]))
    await _settle()
    release["a"].set()  # a's calls end: e (holding none) goes before a's and the others' third
    await _settle()
    assert ("e", "r") in started
    for event in release.values():
        event.set()
    await asyncio.gather(*tasks, newcomer)
    assert slots.free == 8 and slots.held == {}


async def test_a_cancelled_wait_gives_nothing_away() -> None:
    slots = FairSlots(4)
    hold = asyncio.Event()
    started: list[tuple[str, str]] = []
    first = [asyncio.create_task(_hold(slots, ("a", "r"), started, hold)) for _ in range(2)]
    await _settle()
    waiting = asyncio.create_task(_hold(slots, ("a", "r"), started, hold))  # over its cap of 2
    await _settle()
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    hold.set()
    await asyncio.gather(*first)
    assert slots.free == 4 and slots.held == {} and len(started) == 2
