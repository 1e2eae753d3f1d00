"""Issue #24, "Supervision" (defect 3: a consumer task that raised died silently, nothing restarted
it, /readyz stayed 200). Every long-lived task of the daemon runs under kmsaudit/run/supervise.py."""

from __future__ import annotations

import asyncio

import pytest

from kmsaudit.logging import configure
from kmsaudit.metrics import Metrics
from kmsaudit.run.supervise import FIRST_BACKOFF, MAX_BACKOFF, Supervisor


def sample(metrics: Metrics, name: str, task: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"task": task})


@pytest.mark.parametrize("json_logs", [True, False])
async def test_a_crashed_task_is_logged_counted_shown_down_and_restarted_with_backoff(
    capsys: pytest.CaptureFixture[str], json_logs: bool
) -> None:
    configure(json_logs=json_logs, level="info")  # as the daemon logs (JSON by default): the traceback too
    metrics, stopping = Metrics(), asyncio.Event()
    waits: list[float] = []
    release = asyncio.Event()
    down_seen: list[list[str]] = []
    supervisor: Supervisor

    async def sleep(seconds: float) -> None:  # the backoff, observed instead of waited for
        waits.append(seconds)
        down_seen.append(supervisor.down())
        assert sample(metrics, "kmsaudit_task_up", "events:q") == 0

    runs = 0

    async def consumer() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise ValueError(f"odd message {runs}")
        await release.wait()  # the fourth run stays up

    supervisor = Supervisor(metrics, stopping, sleep=sleep)
    supervisor.start("events:q", consumer)
    for _ in range(100):
        await asyncio.sleep(0)
        if runs == 4:
            break
    assert runs == 4
    assert waits == [FIRST_BACKOFF, 2 * FIRST_BACKOFF, 4 * FIRST_BACKOFF]
    assert down_seen == [["events:q"]] * 3  # /readyz reads this: 503 while it is down
    assert supervisor.down() == []
    assert sample(metrics, "kmsaudit_task_restarts_total", "events:q") == 3
    assert sample(metrics, "kmsaudit_task_up", "events:q") == 1
    err = capsys.readouterr()
    out = err.out + err.err
    assert "daemon.task_crashed" in out and "odd message 1" in out and "Traceback" in out  # logged with it
    stopping.set()
    release.set()
    await supervisor.stop_all()
    assert supervisor.names() == []


async def test_the_backoff_is_capped_and_a_task_that_returns_is_restarted_too() -> None:
    metrics, stopping = Metrics(), asyncio.Event()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 10:
            stopping.set()

    async def returns() -> None:  # a consumer has nothing to finish: returning is a failure
        return None

    supervisor = Supervisor(metrics, stopping, sleep=sleep)
    supervisor.start("scheduler", returns)
    for _ in range(200):
        await asyncio.sleep(0)
    assert waits[:7] == [1, 2, 4, 8, 16, 32, 60] and max(waits) == MAX_BACKOFF
    assert sample(metrics, "kmsaudit_task_restarts_total", "scheduler") == 9  # the tenth wait ends in a stop
    await supervisor.stop_all()


async def test_a_stopped_task_leaves_no_series_and_cannot_be_started_twice() -> None:
    metrics, stopping = Metrics(), asyncio.Event()

    async def forever() -> None:
        await asyncio.Event().wait()

    supervisor = Supervisor(metrics, stopping)
    supervisor.start("events:old", forever)
    with pytest.raises(ValueError):
        supervisor.start("events:old", forever)
    await asyncio.sleep(0)
    assert sample(metrics, "kmsaudit_task_up", "events:old") == 1
    await supervisor.stop("events:old")  # a reload replaced its queue
    assert sample(metrics, "kmsaudit_task_up", "events:old") is None
    assert supervisor.down() == [] and supervisor.names() == []


async def test_a_consumer_whose_receives_keep_failing_is_shown_down_until_one_succeeds() -> None:
    # Issue #24 (supervision): a consumer that catches and retries a ReceiveMessage failing for
    # ever (access denied on the queue, the endpoint gone) never crashes — it must still read
    # as down: kmsaudit_task_up 0 and /readyz's "task down" after DOWN_AFTER_FAILURES in a row.
    from kmsaudit.run.receive import DOWN_AFTER_FAILURES, ReceiveHealth

    metrics, stopping = Metrics(), asyncio.Event()
    supervisor = Supervisor(metrics, stopping)
    release = asyncio.Event()
    supervisor.start("events:q", release.wait)
    await asyncio.sleep(0)
    health = ReceiveHealth("https://sqs/q", lambda url, reason: supervisor.degraded("events:q", reason))
    for _ in range(DOWN_AFTER_FAILURES - 1):
        health.failed("AccessDenied")
    assert supervisor.down() == [] and sample(metrics, "kmsaudit_task_up", "events:q") == 1
    health.failed("AccessDenied")
    assert supervisor.down() == ["events:q"]
    assert sample(metrics, "kmsaudit_task_up", "events:q") == 0
    assert "AccessDenied" in supervisor.status("events:q").last_error  # type: ignore[union-attr]
    health.failed("AccessDenied")  # still down, reported once
    health.succeeded()
    assert supervisor.down() == [] and sample(metrics, "kmsaudit_task_up", "events:q") == 1
    stopping.set()
    release.set()
    await supervisor.stop_all()
