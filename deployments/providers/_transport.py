"""Translate transport-level failures (httpx, JSON decoding) that SDKs let through.

The anthropic and openai SDKs run on httpx2, google-genai on httpx; both families are handled.
The official SDKs wrap connection failures that happen while *sending* a request into their own
exception classes, but a failure while *reading* a stream (connection cut, read timeout, a chunk
that is not JSON) reaches the caller as the raw httpx or JSON exception. Every adapter calls
``translate_transport_error`` for those; it classifies by exception class only.
"""

from __future__ import annotations

import json

import httpx
import httpx2

from serve_app.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderStreamError,
    ProviderTimeoutError,
)


def translate_transport_error(
    exc: BaseException, *, provider: str, model: str, streaming: bool
) -> ProviderError | None:
    """Return our error for a transport failure, or None when ``exc`` is not one."""
    if isinstance(exc, httpx.TimeoutException | httpx2.TimeoutException):
        what = "stream stalled" if streaming else "request timed out"
        return ProviderTimeoutError(f"{what} ({type(exc).__name__})", provider=provider, model=model)
    if isinstance(exc, httpx.TransportError | httpx2.TransportError):
        if streaming:
            return ProviderStreamError(
                f"stream cut by the provider ({type(exc).__name__})", provider=provider, model=model
            )
        return ProviderConnectionError(
            f"connection failed ({type(exc).__name__})", provider=provider, model=model
        )
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return ProviderStreamError(
            f"malformed response from the provider ({type(exc).__name__})", provider=provider, model=model
        )
    return None


def http_timeout(connect_s: float, read_s: float) -> httpx.Timeout:
    """An httpx timeout (google-genai); the httpx2 SDKs take their own ``Timeout`` class."""
    return httpx.Timeout(read_s, connect=connect_s)
