"""How many HTTP requests an ingress replica is serving right now (a pure ASGI middleware).

The ingress reads it to decide where a prompt is classified under ``deployments.classifier.
placement: adaptive``: when the replica serves no other request, in its own process (no Ray hop;
its CPU is idle anyway); otherwise at the batched classifier deployment.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class InFlight:
    """Counts HTTP requests from their arrival until their response, streamed bodies included,
    has been sent (or the request failed)."""

    def __init__(self, app: ASGIApp, counter: InFlightCount) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.counter.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.counter.count -= 1


class InFlightCount:
    """The number the middleware keeps (read by the ingress)."""

    def __init__(self) -> None:
        self.count = 0

    def alone(self) -> bool:
        """True while the request asking is the only one this replica serves."""
        return self.count <= 1
