"""The loop-lag monitor: the worst wake-up delay of the last window, measured on a real loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from deployments.providers.base import Completion, StreamDelta, Usage
from serve_app.loop_lag import Lateness, LoopLag


def test_recent_is_the_worst_lag_of_the_window() -> None:
    now = [100.0]
    lag = LoopLag(window_s=1.0, clock=lambda: now[0])
    assert lag.recent() == 0.0
    lag.observe(0.002, 100.0)
    lag.observe(0.300, 100.2)
    lag.observe(0.010, 100.4)
    now[0] = 100.5
    assert lag.recent() == 0.300
    now[0] = 101.3  # the 0.3 s sample left the window; the later, smaller one has not
    assert lag.recent() == 0.010
    now[0] = 102.0
    assert lag.recent() == 0.0


async def test_a_blocked_loop_is_measured() -> None:
    lag = LoopLag(interval_s=0.01, window_s=5.0)
    task = asyncio.create_task(lag.run())
    try:
        await asyncio.sleep(0.05)
        assert lag.recent() < 0.1  # an idle loop wakes on time
        time.sleep(0.25)  # noqa: ASYNC251  # a saturated replica: every coroutine on its loop waits
        await asyncio.sleep(0.03)
        assert lag.recent() >= 0.2
    finally:
        task.cancel()


async def test_a_stall_counts_before_the_sampler_has_woken_from_it() -> None:
    """The gateway's hedge timer and the sampler's sleep both fall due in a stall; read by whoever
    runs first, the stall already shows as the sampler's overdue wake-up."""
    lag = LoopLag(interval_s=0.05, window_s=5.0)
    task = asyncio.create_task(lag.run())
    try:
        await asyncio.sleep(0.01)  # the sampler is asleep
        assert lag.recent() < 0.05
        time.sleep(0.3)  # noqa: ASYNC251  # the loop stalls; nothing on it has run since
        assert lag.recent() >= 0.2
    finally:
        task.cancel()


def test_lateness_is_the_worst_of_our_loop_and_of_what_the_hop_to_a_provider_added() -> None:
    now = [10.0]
    own = LoopLag(window_s=1.0, clock=lambda: now[0])
    late = Lateness(own)
    assert late("openai") == 0.0  # nothing reported yet
    late.report("openai", Completion("", "stop", Usage(), replica_s=0.05), elapsed_s=0.45)  # hop: 0.4
    late.report("openai", StreamDelta(replica_lag_s=0.2, replica_s=0.1), elapsed_s=0.15)  # replica late
    own.observe(0.1, 10.0)
    assert late("openai") == pytest.approx(0.4) and late("anthropic") == 0.1  # another: our own only
    now[0] = 10.5
    late.report("openai", Completion("", "stop", Usage(), replica_s=0.3), elapsed_s=0.302)  # slow provider
    now[0] = 11.2  # the earlier reports and our own 0.1 left the window
    assert late("openai") == pytest.approx(0.002) and late("anthropic") == 0.0
