"""How late a replica's event loop runs: the router's own congestion, told apart from a slow provider.

A hedge (``Gateway._race``) starts the next candidate beside an attempt that has run too long.
When the attempt is slow because the ingress replica itself is saturated (each of its awaits waits
its turn behind dozens of other requests on the loop), the provider is not slow: a hedge then adds
work where there is no CPU to spare, answers from another, usually dearer, model, and charges the
overtaken model a failure in its breaker. ``LoopLag`` samples how late a short sleep wakes; the
gateway holds a hedge back while the worst lag of the last second is a tenth of the hedge's delay
or more (``LOCAL_LAG_SHARE``).

Seen before it (``benchmarks/README.md``): at 64 concurrent requests on a 2-CPU machine, with the
emulator answering at once, 11 of 4,800 answers came from the coding row's primary model instead of
its cost-sensitive one, each a hedge started by the replica's own queueing.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

LOCAL_LAG_SHARE = 0.1  # a hedge waits while the loop's recent lag is at least this share of its delay


class LoopLag:
    """The worst wake-up delay of a periodic sleep over the last ``window_s``."""

    def __init__(
        self, interval_s: float = 0.05, window_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque()  # (when, lag), lags decreasing

    def observe(self, lag_s: float, now: float) -> None:
        """One sample. Older samples no larger than it can never be the maximum again: dropped."""
        while self._samples and self._samples[-1][1] <= lag_s:
            self._samples.pop()
        self._samples.append((now, lag_s))
        self._expire(now)

    def recent(self) -> float:
        """The largest lag seen in the last ``window_s`` (0 when none)."""
        self._expire(self._clock())
        return self._samples[0][1] if self._samples else 0.0

    def _expire(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._samples.popleft()

    async def run(self) -> None:
        """Sample forever on the running loop (one sleep every ``interval_s``)."""
        while True:
            began = self._clock()
            await asyncio.sleep(self.interval_s)
            now = self._clock()
            self.observe(max(0.0, now - began - self.interval_s), now)
