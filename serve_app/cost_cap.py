"""A request's own cost limit (``fusion.max_cost_usd`` / ``x-fusion-max-cost-usd``), kept across every
call the request makes: the first attempt, fallbacks, hedges, spare and continued streams.

A call starts only when what the request may already owe plus the call's worst case (every prompt
token uncached, the whole output limit produced) fits the limit. What it may owe:

- calls that ended and were charged: their charge (a broken stream at its estimate, from the
  characters it sent);
- calls in flight: their worst case, held until they are charged;
- calls that ended without a charge the router can know: a timed-out call, an attempt cancelled
  because another won (the provider may finish and bill it anyway), a spare stream closed unused:
  their worst case, kept for the rest of the request.

A call refused by a provider (an HTTP error, a refused connection) releases its hold: it is not
billed. So the request's cost never passes the limit (as long as the prices are right, and but for
what a broken stream's estimate misses).
"""

from __future__ import annotations

from dataclasses import dataclass, field

EPSILON_USD = 1e-12  # float sums of the same prices must not refuse a call that exactly fits


@dataclass
class CostCap:
    limit_usd: float
    held_usd: float = 0.0  # worst cases of the calls in flight, or ended without a known charge
    left_out: list[str] = field(default_factory=list)  # models passed over: no room left under the limit

    def fits(self, charged_usd: float | None, worst_usd: float) -> bool:
        """Whether a call whose worst case is ``worst_usd`` may start, with ``charged_usd`` charged."""
        return (charged_usd or 0.0) + self.held_usd + worst_usd <= self.limit_usd + EPSILON_USD

    def hold(self, worst_usd: float) -> None:
        self.held_usd += worst_usd

    def release(self, worst_usd: float) -> None:
        """A held call was charged (or was not billed): its worst case no longer counts."""
        self.held_usd = max(0.0, self.held_usd - worst_usd)

    def leave_out(self, model: str) -> None:
        if model not in self.left_out:
            self.left_out.append(model)

    def reason(self, charged_usd: float | None) -> str | None:
        """What the limit did to a request that no provider served; None when it did nothing."""
        if not self.left_out:
            return None
        return (
            f"No provider could serve the request within its max_cost_usd ${self.limit_usd:.6f}: "
            f"{', '.join(self.left_out)} left out, since ${(charged_usd or 0.0) + self.held_usd:.6f} "
            "was already charged or may be billed for earlier attempts"
        )
