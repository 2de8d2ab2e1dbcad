"""Rate-limit buckets and request deadlines, with hand-computed expectations."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from pipeline.serve.limits import Deadline, RateLimiter, RequestTimeoutError, run_with_deadline


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_burst_then_refills_at_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=4.0, burst=3, clock=clock)
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k") == pytest.approx(0.25)  # one token takes 1/4 s
    clock.now += 0.125  # half a token
    assert limiter.acquire("k") == pytest.approx(0.125)
    clock.now += 0.125
    assert limiter.acquire("k") == 0.0
    assert limiter.acquire("k") == pytest.approx(0.25)


def test_bucket_never_saves_more_than_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=10.0, burst=2, clock=clock)
    limiter.acquire("k")
    clock.now += 3600  # an hour of rest refills to 2, not 36,000
    assert [limiter.acquire("k") for _ in range(3)][2] == pytest.approx(0.1)


def test_wait_tells_without_taking() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=2.0, burst=1, clock=clock)
    assert limiter.wait("k") == 0.0
    assert limiter.wait("k") == 0.0  # nothing taken
    limiter.acquire("k")
    assert limiter.wait("k") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.wait("k") == 0.0


def test_buckets_are_per_key() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1, clock=FakeClock())
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0.0


def test_bucket_under_concurrent_threads_grants_exactly_burst() -> None:
    limiter = RateLimiter(rate_per_s=1e-9, burst=50, clock=FakeClock())
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        waits = list(pool.map(lambda _: limiter.acquire("k"), range(400)))
    assert sum(wait == 0.0 for wait in waits) == 50


def test_deadline_commit_fails_after_abandon() -> None:
    deadline = Deadline()
    assert deadline.abandon()
    with pytest.raises(RequestTimeoutError):
        deadline.commit()


def test_deadline_abandon_fails_after_commit() -> None:
    deadline = Deadline()
    deadline.commit()
    assert not deadline.abandon()


def test_timed_out_work_is_never_committed() -> None:
    release = threading.Event()
    outcome: list[str] = []

    def work(deadline: Deadline) -> str:
        release.wait(10)
        try:
            deadline.commit()
        except RequestTimeoutError:
            outcome.append("refused")
            raise
        outcome.append("charged")
        return "answer"

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with pytest.raises(RequestTimeoutError):
            asyncio.run(run_with_deadline(pool, 0.05, work))
        release.set()
    assert outcome == ["refused"]


def test_committed_work_is_waited_for_past_the_timeout() -> None:
    committed = threading.Event()
    finish = threading.Event()

    def work(deadline: Deadline) -> str:
        deadline.commit()
        committed.set()
        finish.wait(10)
        return "answer"

    async def main() -> str:
        task = asyncio.ensure_future(run_with_deadline(pool, 0.05, work))
        await asyncio.get_running_loop().run_in_executor(None, committed.wait, 10)
        await asyncio.sleep(0.1)  # past the timeout
        finish.set()
        return await task

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert asyncio.run(main()) == "answer"
