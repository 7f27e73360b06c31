"""The ingress's count of requests in flight (serve_app/in_flight.py), on a bare ASGI app."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from serve_app.in_flight import InFlight, InFlightCount


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def test_counts_each_request_until_its_streamed_body_is_sent() -> None:
    counter = InFlightCount()
    seen: list[int] = []
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(counter.count)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await gate.wait()  # the body is still streaming
        await send({"type": "http.response.body", "body": b"x", "more_body": False})

    async def sent(message: Any) -> None:
        seen.append(counter.count)

    async def run() -> None:
        wrapped = InFlight(app, counter)
        first = asyncio.create_task(wrapped({"type": "http"}, _receive, sent))
        await asyncio.sleep(0)
        assert counter.count == 1 and counter.alone()
        second = asyncio.create_task(wrapped({"type": "http"}, _receive, sent))
        await asyncio.sleep(0)
        assert counter.count == 2 and not counter.alone()
        gate.set()
        await asyncio.gather(first, second)

    asyncio.run(run())
    assert counter.count == 0 and counter.alone()
    assert seen[0] == 1 and max(seen) == 2


def test_a_failed_request_is_no_longer_counted_and_other_scopes_never_are() -> None:
    counter = InFlightCount()

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            assert counter.count == 0
            return
        raise RuntimeError("handler failed")

    async def sent(message: Any) -> None:
        pass

    wrapped = InFlight(broken, counter)
    with pytest.raises(RuntimeError):
        asyncio.run(wrapped({"type": "http"}, _receive, sent))
    asyncio.run(wrapped({"type": "lifespan"}, _receive, sent))
    assert counter.count == 0
