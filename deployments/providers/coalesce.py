"""Adaptive coalescing of stream deltas: every delta that is already waiting goes out as one.

Each item a stream yields crosses two process boundaries (provider replica -> ingress -> HTTP
proxy) and becomes one SSE event, and that per-item cost, not the tokens, is what saturates a small
machine under load. ``coalesce`` reads the provider's stream in a task of its own and, whenever
its consumer asks for the next item, hands over everything that has arrived since, merged into one
delta. A consumer that keeps up gets each delta as it comes (no added latency, no timer); one that
falls behind gets fewer, larger deltas, so the cost per token falls exactly when load rises.

An error from the provider's stream is raised after the deltas that came before it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from deployments.providers.base import StreamDelta, ToolCallDelta

_END = object()


def merge(deltas: list[StreamDelta]) -> StreamDelta:
    """One delta with the text of all, and the last finish reason and usage seen."""
    if len(deltas) == 1:
        return deltas[0]
    merged = StreamDelta(text="".join(d.text for d in deltas), tool_calls=merge_tool_calls(deltas))
    for d in deltas:
        if d.finish_reason is not None:
            merged.finish_reason = d.finish_reason
        if d.usage is not None:
            merged.usage = d.usage
    return merged


def merge_tool_calls(deltas: list[StreamDelta]) -> list[ToolCallDelta]:
    """The tool-call pieces of several deltas, joined per call index (id and name from the first)."""
    out: dict[int, ToolCallDelta] = {}
    for d in deltas:
        for piece in d.tool_calls:
            have = out.get(piece.index)
            if have is None:
                out[piece.index] = ToolCallDelta(piece.index, piece.id, piece.name, piece.arguments)
            else:
                have.arguments += piece.arguments
                have.id = have.id or piece.id
                have.name = have.name or piece.name
    return [out[i] for i in sorted(out)]


async def coalesce(stream: AsyncIterator[StreamDelta]) -> AsyncIterator[StreamDelta]:
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for delta in stream:
                queue.put_nowait(delta)
        except Exception as exc:  # handed to the consumer, after the deltas before it
            queue.put_nowait(exc)
        queue.put_nowait(_END)

    reader = asyncio.create_task(pump())
    try:
        done = False
        while not done:
            batch: list[StreamDelta] = []
            item = await queue.get()
            while True:
                if item is _END:
                    done = True
                    break
                if isinstance(item, Exception):
                    if batch:
                        yield merge(batch)
                    raise item
                assert isinstance(item, StreamDelta)
                batch.append(item)
                if queue.empty():
                    break
                item = queue.get_nowait()
            if batch:
                yield merge(batch)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        closer = getattr(stream, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()
