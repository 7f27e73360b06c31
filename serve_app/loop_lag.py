"""How late a replica's event loop runs: the router's own congestion, told apart from a slow provider.

A hedge (``Gateway._race``) starts the next candidate beside an attempt that has run too long.
When the attempt is slow because the ingress replica itself is saturated (each of its awaits waits
its turn behind dozens of other requests on the loop), the provider is not slow: a hedge then adds
work where there is no CPU to spare, answers from another, usually dearer, model, and charges the
overtaken model a failure in its breaker. ``LoopLag`` samples how late a short sleep wakes; the
gateway holds a hedge back while the worst lag of the last second is a tenth of the hedge's delay
or more (``LOCAL_LAG_SHARE``). A wake-up still overdue counts too: when the loop stalls (a long
synchronous step, a collection, the machine pausing the process), the gateway's hedge timer and the
sampler's sleep both fall due in the stall, and the gateway may run first; the sampler's overdue
sleep then shows the stall before the sampler has measured it.

The same holds one hop further: a call that goes through a provider's deployment (the calls beyond
``api_providers_local_calls``) is slow when the hop is, whatever the provider does. Each provider
replica stamps on every answer how late its own loop ran in the last second (``replica_lag_s``) and
how long the call had taken it (``replica_s``); the ingress's elapsed time less the latter is what
the hop added (Ray's queues and transport, and both processes waiting for a core). ``Lateness``
keeps, per provider, the worst of these over the last second beside the ingress replica's own lag,
and the gateway asks it for the provider of the attempt it would hedge.

Seen before them (``benchmarks/README.md``): at 64 concurrent requests on a 2-CPU machine, with the
emulator answering at once, 11 of 4,800 answers came from the coding row's primary model instead of
its cost-sensitive one, each a hedge started by the ingress replica's own queueing (session 17);
then, with that guarded, 2 and 11 of 7,200 in two runs (session 18): calls that took 0.3-0.5 s
through the openai provider's deployment, of which its replica's loop accounted for 5-70 ms and the
ingress's loop for 30-100 ms, the rest being the hop, were hedged, or (read from the code, not
logged) counted as hanging by the slow-call detector, which discounts the same lateness now
(``serve_app/health.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

LOCAL_LAG_SHARE = 0.1  # a hedge waits while the loop's recent lag is at least this share of its delay


class Stamped(Protocol):
    """What a provider replica writes on each answer (``Completion``, ``StreamDelta``)."""

    replica_lag_s: float
    replica_s: float


class WindowMax:
    """The largest value observed over the last ``window_s`` (0 when none)."""

    def __init__(self, window_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque()  # (when, value), values decreasing

    def clock(self) -> float:
        return self._clock()

    def observe(self, value: float, now: float) -> None:
        """One sample. Older samples no larger than it can never be the maximum again: dropped."""
        while self._samples and self._samples[-1][1] <= value:
            self._samples.pop()
        self._samples.append((now, value))
        self._expire(now)

    def recent(self) -> float:
        self._expire(self._clock())
        return self._samples[0][1] if self._samples else 0.0

    def _expire(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._samples.popleft()


class LoopLag(WindowMax):
    """The worst wake-up delay of a periodic sleep over the last ``window_s``."""

    def __init__(
        self, interval_s: float = 0.05, window_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(window_s, clock)
        self.interval_s = interval_s
        self._asleep_since: float | None = None  # when the sampler's pending sleep began

    def recent(self) -> float:
        """The largest lag seen in the last ``window_s``, or how overdue the sampler's pending
        wake-up already is, whichever is larger (0 when neither)."""
        worst = super().recent()
        if self._asleep_since is not None:
            worst = max(worst, self._clock() - self._asleep_since - self.interval_s)
        return worst

    async def run(self) -> None:
        """Sample forever on the running loop (one sleep every ``interval_s``)."""
        while True:
            began = self._asleep_since = self._clock()
            await asyncio.sleep(self.interval_s)
            now = self._clock()
            self._asleep_since = None
            self.observe(max(0.0, now - began - self.interval_s), now)


class Lateness:
    """How late the loops serving a call to ``provider`` run: the worst of this replica's own
    (``own``) and, over the last window, of how much of each call through that provider's deployment
    was spent on our side of it (``report``). Called by the gateway with the provider of the attempt
    it would hedge."""

    def __init__(self, own: LoopLag) -> None:
        self.own = own
        self._reported: dict[str, WindowMax] = {}

    def report(self, provider: str, answer: Stamped, elapsed_s: float) -> None:
        """An answer (or a stream's first item: later ones also wait on the client's reading pace)
        from ``provider``'s deployment, ``elapsed_s`` after this replica sent the call: what the hop
        added (our elapsed time less the provider replica's, ``replica_s``: the call's way there and
        the answer's way back, Ray's queues and both processes' turns for the CPU included) or how
        late that replica's loop ran (``replica_lag_s``), whichever is more."""
        ours = max(answer.replica_lag_s, elapsed_s - answer.replica_s)
        window = self._reported.get(provider)
        if window is None:
            window = self._reported[provider] = WindowMax(self.own.window_s, self.own.clock)
        window.observe(ours, window.clock())

    def __call__(self, provider: str) -> float:
        window = self._reported.get(provider)
        return max(self.own.recent(), window.recent() if window is not None else 0.0)
