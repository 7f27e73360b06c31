"""The loop-lag monitor: the worst wake-up delay of the last window, measured on a real loop."""

from __future__ import annotations

import asyncio
import time

from serve_app.loop_lag import LoopLag


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
