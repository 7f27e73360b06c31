from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from deployments.providers.base import StreamDelta, Usage
from deployments.providers.coalesce import coalesce, merge
from serve_app.errors import ProviderStreamError


async def _burst(n: int, then: Exception | None = None) -> AsyncIterator[StreamDelta]:
    """n deltas that arrive together (no await between them), then an optional error."""
    for i in range(n):
        yield StreamDelta(text=f"t{i} ")
    yield StreamDelta(finish_reason="stop", usage=Usage(3, n))
    if then is not None:
        raise then


async def _paced(n: int) -> AsyncIterator[StreamDelta]:
    for i in range(n):
        await asyncio.sleep(0.01)
        yield StreamDelta(text=f"t{i} ")


async def _collect(stream: AsyncIterator[StreamDelta]) -> list[StreamDelta]:
    return [d async for d in stream]


def test_merge_keeps_all_text_and_the_last_finish_and_usage() -> None:
    merged = merge([StreamDelta("a"), StreamDelta("b", usage=Usage(1, 2)), StreamDelta("", "length")])
    assert merged == StreamDelta("ab", "length", Usage(1, 2))


async def test_what_arrived_together_leaves_as_one_delta() -> None:
    out = await _collect(coalesce(_burst(20)))
    assert len(out) < 21
    assert "".join(d.text for d in out) == "".join(f"t{i} " for i in range(20))
    assert out[-1].finish_reason == "stop" and out[-1].usage == Usage(3, 20)


async def test_a_consumer_that_keeps_up_gets_every_delta_as_it_comes() -> None:
    out = await _collect(coalesce(_paced(5)))
    assert [d.text for d in out] == [f"t{i} " for i in range(5)]


async def test_an_error_comes_after_the_text_before_it() -> None:
    got: list[str] = []
    with pytest.raises(ProviderStreamError):
        async for d in coalesce(_burst(4, ProviderStreamError("cut", provider="p", model="m"))):
            got.append(d.text)
    assert "".join(got) == "t0 t1 t2 t3 "


async def test_closing_early_closes_the_provider_stream() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[StreamDelta]:
        try:
            while True:
                await asyncio.sleep(0.001)
                yield StreamDelta(text="x")
        finally:
            closed.set()

    stream = coalesce(endless())
    first = await anext(stream)
    assert first.text
    await stream.aclose()  # type: ignore[attr-defined]
    assert closed.is_set()
