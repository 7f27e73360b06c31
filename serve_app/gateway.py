"""The request path's core: classify, plan, order candidates by health, call them under one
deadline with the retry policy, continue broken streams, account. Plain Python, no Ray.

The ingress deployment builds a ``Gateway`` around three callables (classify, call a provider,
stream from a provider) that go through Ray handles; unit tests build one around in-process
adapters. The retry rules are in ``serve_app/retry.py``, the breakers in ``serve_app/health.py``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from deployments.providers.base import Completion, ProviderRequest, StreamDelta, Usage
from predictors.classification import Classification
from serve_app.config import FusionConfig
from serve_app.cost_cap import CostCap
from serve_app.errors import (
    Attempt,
    InvalidRequestError,
    NoProviderAvailableError,
    PermissionDeniedError,
    ProviderError,
    ProviderStreamError,
    ProviderTimeoutError,
)
from serve_app.health import HealthRegistry, Outcome
from serve_app.loop_lag import LOCAL_LAG_SHARE
from serve_app.pricing import bounded, request_worst_case_usd, unit_prices
from serve_app.retry import HedgeBudget, backoff_s, cool_down_s, is_final
from serve_app.route_info import Continuation, RouteInfo
from serve_app.routing import (
    Candidate,
    demote_slow,
    direct_plan,
    extra_candidates,
    is_routed,
    missing_capabilities,
    plan_route,
    reads_quality,
    resolve_model,
)
from serve_app.schemas import ChatCompletionRequest

T = TypeVar("T")
# (the prompt, whether its route reads the quality heads' predictions) -> its classification
Classify = Callable[[str, bool], Awaitable[Classification]]
CallProvider = Callable[[str, ProviderRequest], Awaitable[Completion]]
StreamProvider = Callable[[str, ProviderRequest], AsyncIterator[StreamDelta]]

EXPECTED_OUTPUT_TOKENS = 500  # the answer length costs are compared at when a request sets no limit
CONTINUE_INSTRUCTION = (
    "Your previous message was cut off. Continue it exactly where it stopped, without repeating "
    "any of it and without any preamble."
)


class Gateway:
    def __init__(
        self,
        config: FusionConfig,
        classify: Classify,
        call: CallProvider,
        stream: StreamProvider,
        health: HealthRegistry | None = None,
        rng: random.Random | None = None,
        loop_lag: Callable[[str], float] | None = None,
    ) -> None:
        self.config = config
        # seconds late the loops serving a call to a provider run: this replica's, and the provider
        # replica's for a call through its deployment (serve_app/loop_lag.py: Lateness)
        self.loop_lag = loop_lag
        self.retry = config.retry
        self.health = health or HealthRegistry(config.health)
        self._classify = classify
        self._call = call
        self._stream = stream
        self._rng = rng or random.Random()
        self._hedges = HedgeBudget(self.retry.hedge_budget, burst=self.retry.hedge_burst)
        self.stats: dict[str, dict[str, Any]] = {}  # the HealthBoard's rolling statistics, per model
        self.required_quality: dict[str, float] = {}  # task type -> self-tuned target (the ledger's)
        self._unit_prices = {name: unit_prices(config, name) for name in config.models}

    def reset(self) -> None:
        """Forget the incident: close every circuit and refill the hedge budget."""
        self.health.reset()
        self._hedges = HedgeBudget(self.retry.hedge_budget, burst=self.retry.hedge_burst)

    def permit(self, request: ChatCompletionRequest, allowed: Collection[str] | None) -> None:
        """403 model_not_allowed for a direct request for a model outside the key's list (checked
        before the request is counted against the key's rate limits, or any work is done)."""
        if allowed is not None and not is_routed(request.model):
            _require_allowed(resolve_model(request.model, self.config), allowed)

    async def plan(
        self,
        request: ChatCompletionRequest,
        request_id: str,
        budget_pressure: bool = False,
        allowed: Collection[str] | None = None,
    ) -> RouteInfo:
        """The request's candidates, in order. ``allowed``: the models the caller's key may use
        (None: all); a routed request chooses among them only (``permit`` has refused a direct
        request for another)."""
        needed, output = request.estimated_tokens(), request.output_limit()
        if not is_routed(request.model):
            info = RouteInfo(request_id, direct_plan(request.model, self.config), None)
            if allowed is not None:  # as permit checked, on the model already resolved
                _require_allowed(info.plan.candidates[0].model, allowed)
        else:
            began = time.monotonic()
            quality = reads_quality(request.model, self.config) and not budget_pressure
            classification = await self._classify(request.routing_text(), quality)
            classify_ms = (time.monotonic() - began) * 1000
            answer, prompt = output or EXPECTED_OUTPUT_TOKENS, needed - (output or 0)
            costs = {m: p_in * prompt + p_out * answer for m, (p_in, p_out) in self._unit_prices.items()}
            plan = plan_route(
                classification, request.model, self.config, budget_pressure, self.required_quality, costs
            )
            info = RouteInfo(request_id, plan, classification)
            info.timings["classify_ms"] = round(classify_ms, 3)
        needs, params = request.needs(), request.parameters_set()
        lacking = {
            name: missing_capabilities(self.config, name, needs, params, output)
            for name in self.config.models
        }
        capable = {name for name, missing in lacking.items() if not missing}
        if not capable or (info.plan.policy == "direct" and info.plan.candidates[0].model not in capable):
            raise _incapable(
                lacking, [c.model for c in info.plan.candidates] if info.plan.policy == "direct" else None
            )
        if allowed is not None:
            if not capable & set(allowed):
                raise _not_allowed(allowed, "has no model that can serve this request")
            capable &= set(allowed)
        if info.plan.policy == "direct":
            info.candidates = list(info.plan.candidates)
            return info
        fits = [
            c
            for c in info.plan.candidates
            if self.config.models[c.model].context_window >= needed and c.model in capable
        ]
        limit = request.fusion.max_latency_ms if request.fusion else None
        p95 = {model: s.get("latency_p95_ms") for model, s in self.stats.items()}
        extra = [c for c in extra_candidates(info.plan, self.config, needed) if c.model in capable]
        if info.plan.candidates[0].slot == "cost_sensitive":  # a cost-seeking plan: cheapest first
            extra.sort(key=lambda c: costs[c.model])
        info.candidates = demote_slow(
            fits + extra,
            p95,
            limit or self.config.routing.max_latency_p95_ms,
        )
        if not info.candidates:
            largest = max(m.context_window for m in self.config.models.values())
            raise InvalidRequestError(
                f"The request needs about {needed} tokens; the largest context window of any configured "
                f"model is {largest} tokens.",
                param="messages",
                code="context_length_exceeded",
            )
        return info

    def cap_cost(
        self, request: ChatCompletionRequest, info: RouteInfo, max_cost_usd: float
    ) -> ChatCompletionRequest:
        """Keep the candidates whose worst case for this request (every prompt token uncached, its
        whole output limit produced) is at most ``max_cost_usd``; none: 400 max_cost_exceeded,
        naming the cheapest. A request without an output limit gets ``budgets.max_output_tokens``
        (passed on to the provider), so that its real cost cannot pass the worst case."""
        request = bounded(self.config, request)
        costs = {c.model: request_worst_case_usd(self.config, request, c.model) for c in info.candidates}
        kept = [c for c in info.candidates if costs[c.model] <= max_cost_usd]
        if not kept:
            cheapest = min(costs, key=lambda m: costs[m])
            raise InvalidRequestError(
                f"No model can answer within max_cost_usd ${max_cost_usd:.6f}: the cheapest that could "
                f"serve this request, {cheapest}, may cost up to ${costs[cheapest]:.6f} (a prompt of "
                f"up to {request.prompt_tokens_upper()} tokens and {request.output_limit()} output "
                "tokens). Raise the limit, lower max_tokens or shorten the prompt.",
                param="fusion.max_cost_usd",
                code="max_cost_exceeded",
            )
        info.candidates = kept
        info.cap = CostCap(max_cost_usd)  # kept across every call: fallbacks, hedges, continuations
        return request

    # -- one call, with its outcome fed to the breakers ---------------------------------------------

    def _drop(self, candidate: Candidate) -> frozenset[str]:
        """The request's parameters this candidate does not get: its provider's drop_params, and
        reasoning_effort where the model does not reason (a hint, as OpenRouter treats it)."""
        drop: set[str] = set(self.config.providers[candidate.provider].drop_params)
        if not self.config.models[candidate.model].capabilities.reasoning:
            drop.add("reasoning_effort")
        return frozenset(drop)

    def _key(self, candidate: Candidate) -> tuple[str, str]:
        return (candidate.provider, candidate.model)

    def _fail(self, info: RouteInfo, candidate: Candidate, exc: ProviderError, started: float) -> None:
        latency = time.monotonic() - started
        self.health.record(
            Outcome(self._key(candidate), False, latency, cool_down_s(exc, self.retry), error=exc.kind)
        )
        info.attempts.append(
            Attempt(candidate.provider, candidate.model, exc.kind, exc.status_code, exc.message)
        )

    def _succeed(
        self, info: RouteInfo, candidate: Candidate, started: float, first_token_s: float | None = None
    ) -> None:
        latency = time.monotonic() - started
        self.health.record(Outcome(self._key(candidate), True, latency, first_token_s=first_token_s))
        info.served_by = candidate
        info.attempts.append(Attempt(candidate.provider, candidate.model))

    async def _rounds(
        self, info: RouteInfo, deadline: float, exclude: set[str]
    ) -> AsyncGenerator[Candidate, None]:
        """Candidates in retry order: each round skips open circuits; rounds after the first wait a
        jittered backoff. When every circuit is open, the first round tries them anyway."""
        for round_index in range(self.retry.max_rounds):
            if round_index:
                pause = backoff_s(round_index, self.retry, self._rng)
                if time.monotonic() + pause >= deadline:
                    return
                await asyncio.sleep(pause)
            pool = [c for c in info.candidates if c.model not in exclude]
            allowed = [c for c in pool if self.health.allow(self._key(c))]
            for c in pool:
                if c not in allowed and round_index == 0 and c.model not in info.skipped:
                    info.skipped.append(c.model)
            if not allowed and round_index == 0:
                allowed = pool
            for candidate in allowed:
                if time.monotonic() >= deadline:
                    return
                yield candidate

    # -- attempts, hedged -----------------------------------------------------------------------------

    def _congested(self, delay: float, provider: str) -> bool:
        """This replica's loop, or the loop of ``provider``'s replica that a call through its
        deployment waits on, ran late by a tenth of ``delay`` or more in the last second: an attempt
        slow by ``delay`` is slow because of us, and a hedge would only add to the load."""
        return self.loop_lag is not None and self.loop_lag(provider) >= LOCAL_LAG_SHARE * delay

    def _hedge_after(self, candidate: Candidate, stream: bool) -> float | None:
        """When an attempt counts as slow enough to start the next candidate beside it: twice the
        model's usual latency (time to first token for streams), never before hedge_after_s, and
        never after half the attempt's timeout (the usual latency grows when the router is loaded)."""
        if self.retry.hedge_after_s is None:
            return None
        usual = self.health.usual_latency(self._key(candidate), first_token=stream)
        wanted = max(self.retry.hedge_after_s, 2.0 * usual) if usual is not None else self.retry.hedge_after_s
        return min(wanted, max(self.retry.hedge_after_s, self._budget(stream) / 2))

    async def _race(
        self,
        info: RouteInfo,
        deadline: float,
        exclude: set[str],
        attempt: Callable[[Candidate, float], Coroutine[Any, Any, T]],
        stream: bool,
        request: ChatCompletionRequest,
    ) -> tuple[Candidate, float, T, float]:
        """Attempts in retry order. When the attempt in flight is slow, the next candidate starts
        beside it (up to ``retry.max_in_flight``); the first success wins and the others are
        cancelled; each failure is recorded and the next candidate starts. Under a cost limit, a
        candidate starts only if its worst case fits (``serve_app/cost_cap.py``); the winner is
        returned with the worst case held for it, which its caller releases when it charges it."""
        order = self._rounds(info, deadline, exclude)
        self._hedges.request(time.monotonic())
        pending: dict[asyncio.Task[T], tuple[Candidate, float, int, float]] = {}
        waiting: list[Candidate] = []  # the next candidate, taken for a hedge that did not start
        cap = info.cap
        prompt_tokens = _prompt_estimate(request)
        more = True
        hedging = True
        held_until = 0.0  # a hedge held back while the router itself is congested (_congested)

        async def launch(hedge: bool = False) -> bool:
            nonlocal more
            while True:
                candidate = waiting.pop() if waiting else await anext(order, None)
                if candidate is None:
                    more = False
                    return False
                worst = 0.0 if cap is None else request_worst_case_usd(self.config, request, candidate.model)
                fits = cap is None or cap.fits(info.cost_usd, worst)
                if hedge and not (fits and self._hedges.try_hedge(time.monotonic())):
                    waiting.append(candidate)  # no hedge now; it may start once the attempt in flight ends
                    return False
                if fits:
                    break
                assert cap is not None  # only a cost limit refuses a candidate
                cap.leave_out(candidate.model)
            if cap is not None:
                cap.hold(worst)
            started = time.monotonic()
            task = asyncio.create_task(attempt(candidate, min(deadline, started + self._budget(stream))))
            pending[task] = (candidate, started, self.health.begin(self._key(candidate)), worst)
            return True

        async def cancel_all(winner_started: float | None = None) -> None:
            now = time.monotonic()
            for task, (candidate, started, token, held) in list(pending.items()):
                task.cancel()
                self.health.end(self._key(candidate), token)
                if winner_started is not None and started < winner_started:
                    # overtaken by a later attempt: it was too slow, and its breaker should know
                    self.health.record(Outcome(self._key(candidate), False, now - started, error="overtaken"))
                # the provider has the prompt and bills it: charged, estimated, like a broken stream
                prompt = Usage(input_tokens=prompt_tokens)
                charged = info.charge(self.config, candidate, prompt, estimated=True)
                if cap is not None:  # it may bill more than that: its worst case stays counted
                    cap.release(min(charged, held))
            await asyncio.gather(*pending, return_exceptions=True)
            pending.clear()

        try:
            await launch()
            while pending:
                newest = max(pending.values(), key=lambda v: v[1])
                hedge_at = self._hedge_after(newest[0], stream)
                can_hedge = (
                    hedging and more and hedge_at is not None and len(pending) < self.retry.max_in_flight
                )
                due = max(newest[1] + hedge_at, held_until) if can_hedge and hedge_at else None
                wait = max(0.0, due - time.monotonic()) if due is not None else None
                done, _ = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    assert hedge_at is not None
                    if self._congested(hedge_at, newest[0].provider):
                        held_until = time.monotonic() + hedge_at  # slow because we are: look again later
                        continue
                    if await launch(hedge=True):
                        info.hedged.append(newest[0].model)
                    else:
                        hedging = False  # over the cost limit or the hedge budget: wait the attempt out
                    continue
                for task in done:
                    candidate, started, token, held = pending.pop(task)
                    self.health.end(self._key(candidate), token)
                    error = task.exception()
                    if error is None:
                        await cancel_all(winner_started=started)
                        return candidate, started, task.result(), held
                    if cap is not None and not isinstance(error, ProviderTimeoutError):
                        cap.release(held)  # refused, not billed (a timed-out call may still be)
                    if not isinstance(error, ProviderError):
                        raise error
                    self._fail(info, candidate, error, started)
                    if is_final(error):
                        raise error
                if not pending and more:
                    await launch()
        finally:
            await cancel_all()
            await order.aclose()
        raise _exhausted(info.attempts, None if cap is None else cap.reason(info.cost_usd))

    def _stall_hedge_after(self) -> float | None:
        """How long a stream may be silent after tokens before a spare continuation starts."""
        after = self.retry.stall_hedge_after_s
        return None if after is None else min(after, self.retry.inter_token_timeout_s / 2)

    def _budget(self, stream: bool) -> float:
        return self.retry.first_token_timeout_s if stream else self.retry.attempt_timeout_s

    # -- non-streaming ----------------------------------------------------------------------------

    async def complete(self, request: ChatCompletionRequest, info: RouteInfo) -> Completion:
        deadline = time.monotonic() + self.config.server.request_timeout_s

        async def attempt(candidate: Candidate, until: float) -> Completion:
            timeout = until - time.monotonic()
            try:
                return await asyncio.wait_for(
                    self._call(
                        candidate.provider,
                        request.to_provider_request(candidate.provider_model, self._drop(candidate)),
                    ),
                    timeout=timeout,
                )
            except TimeoutError:
                raise _timeout(candidate, f"no answer in {timeout:.1f}s") from None

        candidate, started, result, held = await self._race(
            info, deadline, set(), attempt, stream=False, request=request
        )
        self._succeed(info, candidate, started)
        info.timings["provider_ms"] = round((time.monotonic() - started) * 1000, 3)
        info.served_model = result.provider_model or None
        info.charge(self.config, candidate, result.usage)
        if info.cap is not None:
            info.cap.release(held)
        return result

    # -- streaming ----------------------------------------------------------------------------------

    async def open_stream(
        self, request: ChatCompletionRequest, info: RouteInfo, exclude: set[str] | None = None
    ) -> StreamSession:
        """Start a stream on the first candidate that yields a token before its timeout."""
        deadline = time.monotonic() + self.config.server.request_timeout_s
        session = await self._open_segment(request, info, deadline, exclude or set())
        info.first_token_s = time.monotonic() - info.started
        return StreamSession(self, request, info, session)

    async def _open_segment(
        self, request: ChatCompletionRequest, info: RouteInfo, deadline: float, exclude: set[str]
    ) -> Segment:
        async def attempt(candidate: Candidate, until: float) -> Segment:
            started = time.monotonic()
            stream = self._stream(
                candidate.provider,
                request.to_provider_request(candidate.provider_model, self._drop(candidate)),
            )
            first: list[StreamDelta] = []
            wait = until - started
            try:
                await asyncio.wait_for(_until_content(stream, first, candidate), timeout=wait)
            except TimeoutError:
                await _close(stream)
                raise _timeout(candidate, f"no first token in {wait:.1f}s") from None
            except BaseException:  # a provider error, or cancelled because another candidate won
                await _close(stream)
                raise
            first_token_s = time.monotonic() - started
            self.health.note_first_token(self._key(candidate), first_token_s)
            return Segment(candidate, started, first, stream, first_token_s=first_token_s)

        candidate, _, segment, held = await self._race(
            info, deadline, exclude, attempt, stream=True, request=request
        )
        info.served_by = candidate
        segment.held_usd = held
        return segment


@dataclass
class Segment:
    """One provider stream that produced its first token."""

    candidate: Candidate
    started: float
    first: list[StreamDelta]
    rest: AsyncIterator[StreamDelta]
    text: str = ""
    usage: Usage | None = None
    first_token_s: float | None = None
    held_usd: float = 0.0  # its worst case, held under the request's cost limit until it is charged


@dataclass
class StreamSession:
    """A stream whose first token has arrived; ``deltas()`` replays it, continues it, and when the
    provider breaks after tokens were sent, continues the answer on another candidate."""

    gateway: Gateway
    request: ChatCompletionRequest
    info: RouteInfo
    segment: Segment
    sent: list[str] = field(default_factory=list)
    finished: bool = False  # every segment is accounted for (ended, or failed and charged)
    tool_calls_sent: bool = False

    @property
    def allow_continuation(self) -> bool:
        return self.request.fusion is None or self.request.fusion.allow_continuation

    async def deltas(self) -> AsyncIterator[StreamDelta]:
        gw, info = self.gateway, self.info
        deadline = self.segment.started + gw.config.server.request_timeout_s
        while True:
            seg = self.segment
            finish: StreamDelta | None = None
            try:
                async for delta in self._watch(seg, deadline):
                    if delta.text:
                        self.sent.append(delta.text)
                        seg.text += delta.text
                    if delta.usage is not None:
                        seg.usage = delta.usage
                    if delta.finish_reason is not None:
                        finish = delta  # held back until the segment is accounted for
                    if delta.tool_calls:
                        self.tool_calls_sent = True
                    if delta.text or delta.tool_calls:  # a coalesced delta may carry the finish too
                        yield StreamDelta(text=delta.text, tool_calls=delta.tool_calls)
            except (ProviderError, _Overtaken) as caught:
                exc = caught.error if isinstance(caught, _Overtaken) else caught
                gw._fail(info, seg.candidate, exc, seg.started)
                self._charge(seg, self._estimate(seg), estimated=True)
                self.finished = True  # charged; a continuation that starts re-opens the account
                if isinstance(caught, _Overtaken):
                    self.segment = caught.segment
                else:
                    if not self.allow_continuation or is_final(exc) or self.tool_calls_sent:
                        raise  # a tool call cannot be continued by another model mid-way
                    try:
                        self.segment = await gw._open_segment(
                            self._continuation(), info, deadline, self._failed_models()
                        )
                    except NoProviderAvailableError:
                        raise exc from None
                self.finished = False
                info.continuations.append(
                    Continuation(
                        seg.candidate.model, self.segment.candidate.model, len("".join(self.sent)), exc.kind
                    )
                )
                continue
            gw._succeed(info, seg.candidate, seg.started, seg.first_token_s)
            self._charge(seg, seg.usage or self._estimate(seg), estimated=seg.usage is None)
            self.finished = True
            yield StreamDelta(finish_reason=finish.finish_reason if finish else "stop", usage=info.usage)
            return

    async def _watch(self, seg: Segment, deadline: float) -> AsyncIterator[StreamDelta]:
        """The segment's deltas. A silence of ``inter_token_timeout_s`` raises a timeout; a shorter
        one (``stall_hedge_after``) starts the continuation on another candidate beside the silent
        stream: if that answers first, ``_Overtaken`` hands it over, if the silent stream speaks
        first, the spare is cancelled."""
        gw, info = self.gateway, self.info
        for delta in seg.first:
            yield delta
        seg.first = []
        iterator = seg.rest.__aiter__()
        timeout = gw.retry.inter_token_timeout_s
        spare_after = gw._stall_hedge_after() if self.allow_continuation else None
        while True:
            silent_since = time.monotonic()
            hedge_after = spare_after
            nxt: asyncio.Future[StreamDelta] = asyncio.ensure_future(iterator.__anext__())
            spare: asyncio.Task[Segment] | None = None
            try:
                while True:
                    now = time.monotonic()
                    if spare is None and hedge_after is not None and now >= silent_since + hedge_after:
                        assert spare_after is not None
                        if gw._congested(spare_after, seg.candidate.provider):
                            hedge_after = now - silent_since + spare_after  # silent because we are busy
                        else:
                            if gw._hedges.try_hedge(now):
                                exclude = self._failed_models() | {seg.candidate.model}
                                spare = asyncio.create_task(
                                    gw._open_segment(self._continuation(), info, deadline, exclude)
                                )
                            hedge_after = None  # one spare per silence, and none over budget
                    wake = silent_since + (timeout if hedge_after is None else hedge_after)
                    waiting: set[asyncio.Future[Any]] = {nxt} if spare is None else {nxt, spare}
                    done, _ = await asyncio.wait(
                        waiting, timeout=max(0.0, wake - now), return_when=asyncio.FIRST_COMPLETED
                    )
                    if nxt in done:
                        break
                    if spare is not None and spare in done:
                        if spare.exception() is None:
                            silent = time.monotonic() - silent_since
                            error = _timeout(
                                seg.candidate, f"stream silent for {silent:.1f}s; continued on another model"
                            )
                            taken, spare = spare.result(), None
                            raise _Overtaken(taken, error)
                        spare = None  # no other candidate could start: wait the silence out
                    elif time.monotonic() >= silent_since + timeout:
                        raise _timeout(seg.candidate, f"stream stalled for {timeout:.1f}s")
            except BaseException:
                nxt.cancel()
                await asyncio.gather(nxt, return_exceptions=True)
                await _close(seg.rest)
                raise
            finally:
                if spare is not None:
                    await _drop_spare(spare, info, seg)
            try:
                delta = nxt.result()
            except StopAsyncIteration:
                return
            yield delta

    def _failed_models(self) -> set[str]:
        """Models that already failed this request: a continuation goes elsewhere."""
        return {a.model for a in self.info.attempts if a.error is not None}

    def _continuation(self) -> ChatCompletionRequest:
        """The original conversation, the text already sent as an assistant turn, and the ask to go on."""
        return self.request.continued("".join(self.sent), CONTINUE_INSTRUCTION)

    def _charge(self, seg: Segment, usage: Usage, estimated: bool) -> None:
        """Charge a segment that ended; its hold under the cost limit gives way to the charge."""
        self.info.charge(self.gateway.config, seg.candidate, usage, estimated=estimated)
        if self.info.cap is not None:
            self.info.cap.release(seg.held_usd)

    def _estimate(self, seg: Segment) -> Usage:
        return Usage(input_tokens=_prompt_estimate(self.request), output_tokens=max(1, len(seg.text) // 4))

    async def aclose(self) -> None:
        """Close the provider stream; a stream left early (the client went away) is charged for
        what it produced so far, estimated."""
        await _close(self.segment.rest)
        if not self.finished:
            self.finished = True
            seg = self.segment
            self._charge(seg, seg.usage or self._estimate(seg), estimated=True)


class _Overtaken(Exception):
    """A silent stream's spare continuation answered first and takes over."""

    def __init__(self, segment: Segment, error: ProviderTimeoutError) -> None:
        super().__init__(error.message)
        self.segment = segment
        self.error = error


async def _drop_spare(spare: asyncio.Task[Segment], info: RouteInfo, seg: Segment) -> None:
    """Cancel a spare continuation that is not taking over (or close it, if it had just started)."""
    if not spare.done():
        spare.cancel()
        await asyncio.gather(spare, return_exceptions=True)
        return
    if spare.cancelled() or spare.exception() is not None:
        return
    await _close(spare.result().rest)
    info.served_by = seg.candidate


async def _until_content(
    stream: AsyncIterator[StreamDelta], into: list[StreamDelta], candidate: Candidate
) -> None:
    """Pull deltas until one carries text, a tool call or a finish reason (an empty answer is still
    an answer)."""
    async for delta in stream:
        into.append(delta)
        if delta.text or delta.tool_calls or delta.finish_reason is not None:
            return
    raise ProviderStreamError(
        "stream ended before any token", provider=candidate.provider, model=candidate.model
    )


async def _close(stream: AsyncIterator[StreamDelta]) -> None:
    closer = getattr(stream, "aclose", None)
    if closer is not None:
        try:
            await closer()
        except Exception:  # closing a broken stream must not hide the error that broke it
            pass


def _require_allowed(model: str, allowed: Collection[str]) -> None:
    if model not in allowed:
        raise _not_allowed(allowed, f"may not use the model '{model}'")


def _not_allowed(allowed: Collection[str], what: str) -> PermissionDeniedError:
    """403: the key's model list rules the request out."""
    return PermissionDeniedError(
        f"This API key {what}. It may use: {', '.join(sorted(allowed))} (and the routing policies "
        "auto, auto:cost, ... among them).",
        param="model",
        code="model_not_allowed",
    )


def _incapable(lacking: dict[str, set[str]], requested: list[str] | None) -> InvalidRequestError:
    """400 naming what the request needs that no (or not the requested) model has."""
    if requested:
        missing = sorted(lacking[requested[0]])
        return InvalidRequestError(
            f"The model '{requested[0]}' cannot serve this request: it lacks {', '.join(missing)}. "
            f"Models that can: {', '.join(sorted(m for m, x in lacking.items() if not x)) or 'none'}.",
            param="model",
            code="capability_missing",
        )
    common = set.intersection(*lacking.values()) if lacking else set()
    return InvalidRequestError(
        "No configured model can serve this request: it needs "
        f"{', '.join(sorted(common or set().union(*lacking.values())))}, which no model has.",
        code="capability_missing",
    )


def _prompt_estimate(request: ChatCompletionRequest) -> int:
    """Prompt tokens of a call whose usage the provider never reported (4 characters a token)."""
    return max(1, sum(len(m.text()) for m in request.messages) // 4)


def _timeout(candidate: Candidate, why: str) -> ProviderTimeoutError:
    return ProviderTimeoutError(why, provider=candidate.provider, model=candidate.model)


def _exhausted(attempts: list[Attempt], reason: str | None = None) -> NoProviderAvailableError:
    kinds = {a.error for a in attempts if a.error}
    if kinds and kinds <= {"timeout"}:
        status = 504
    elif kinds & {"rate_limited", "overloaded"} or not attempts:
        status = 503
    else:
        status = 502
    return NoProviderAvailableError(attempts, status=status, reason=reason)
