from __future__ import annotations

from serve_app.health import BreakerConfig, HealthRegistry, Outcome, merge
from tests.conftest import Clock

KEY = ("anthropic", "claude-sonnet-4-5")


def _registry(**kw: float) -> tuple[HealthRegistry, Clock]:
    clock = Clock(100.0)
    return HealthRegistry(BreakerConfig(**kw), clock=clock), clock  # type: ignore[arg-type]


def _fail(reg: HealthRegistry, n: int = 1, cool_down: float | None = None) -> None:
    for _ in range(n):
        reg.record(Outcome(KEY, False, 0.1, cool_down))


def test_opens_after_consecutive_failures_and_blocks() -> None:
    reg, _ = _registry(failure_threshold=3)
    _fail(reg, 2)
    assert reg.allow(KEY)
    reg.record(Outcome(KEY, True, 0.1))  # a success resets the run
    _fail(reg, 2)
    assert reg.allow(KEY)
    _fail(reg, 1)
    assert not reg.allow(KEY) and reg.states() == {"anthropic/claude-sonnet-4-5": "open"}


def test_half_open_probe_closes_or_reopens_with_longer_wait() -> None:
    reg, clock = _registry(failure_threshold=1, open_s=2.0, probes=1)
    _fail(reg)
    clock.now += 2.0
    assert reg.allow(KEY)  # the probe
    assert not reg.allow(KEY)  # only one probe at a time
    _fail(reg)  # the probe failed: open again, twice as long
    clock.now += 2.0
    assert not reg.allow(KEY)
    clock.now += 2.0
    assert reg.allow(KEY)
    reg.record(Outcome(KEY, True, 0.05))
    assert reg.breaker(KEY).state == "closed" and reg.allow(KEY) and reg.allow(KEY)


def test_failure_rate_over_window_trips() -> None:
    reg, _ = _registry(failure_threshold=100, failure_rate=0.5, window=10, min_calls=10)
    for i in range(10):
        reg.record(Outcome(KEY, i % 2 == 0, 0.1))
    assert reg.breaker(KEY).state == "open"


def test_cool_down_opens_at_once_for_at_least_that_long() -> None:
    reg, clock = _registry(failure_threshold=5, open_s=1.0, max_open_s=30.0)
    _fail(reg, 1, cool_down=8.0)
    assert not reg.allow(KEY)
    clock.now += 7.9
    assert not reg.allow(KEY)
    clock.now += 0.2
    assert reg.allow(KEY)


def test_board_merges_replicas_and_replicas_adopt() -> None:
    board, _ = _registry(failure_threshold=3)
    a, _ = _registry(failure_threshold=3)
    b, _ = _registry(failure_threshold=3)
    _fail(a, 2)
    _fail(b, 1)  # no single replica has seen three failures
    assert a.allow(KEY) and b.allow(KEY)
    merge(board, a.drain())
    remote = merge(board, b.drain())
    assert KEY in remote and remote[KEY] > 0
    a.adopt(remote)
    b.adopt(remote)
    assert not a.allow(KEY) and not b.allow(KEY)


def test_latency_is_tracked_from_successes() -> None:
    reg, _ = _registry()
    reg.record(Outcome(KEY, True, 1.0))
    reg.record(Outcome(KEY, True, 0.0))
    assert reg.latency(KEY) == 0.8
    reg.reset()
    assert reg.latency(KEY) is None and reg.states() == {"anthropic/claude-sonnet-4-5": "closed"}


def test_hanging_calls_take_a_model_out_of_rotation_before_any_timeout() -> None:
    reg, clock = _registry(slow_call_s=0.5, slow_call_threshold=3)
    tokens = [reg.begin(KEY) for _ in range(3)]
    assert reg.allow(KEY)  # not slow yet
    clock.now += 0.6
    assert not reg.allow(KEY) and not reg.available(KEY)
    reg.end(KEY, tokens[0])
    assert reg.allow(KEY)  # two slow calls are under the threshold
    assert reg.breaker(KEY).state == "closed"  # slowness alone does not trip the breaker


def test_a_call_is_slow_only_beyond_what_the_router_itself_adds_now() -> None:
    """Calls that wait on our own queues (the ingress's loop, the hop to a provider's deployment)
    are not the provider hanging: the slow-call cutoff moves by the router's current lateness."""
    reg, clock = _registry(slow_call_s=0.5, slow_call_threshold=3)
    ours = {"anthropic": 0.4}
    reg.lateness = lambda provider: ours.get(provider, 0.0)
    for _ in range(3):
        reg.begin(KEY)
    clock.now += 0.6
    assert reg.allow(KEY)  # 0.6 s unanswered, of which we may have added 0.4
    clock.now += 0.35
    assert not reg.allow(KEY)  # 0.95 s: longer than our share explains
    ours["anthropic"] = 0.6
    assert reg.allow(KEY)
