"""Reading a request body: size-limited (413) and JSON-decoded (400), before any model parses it."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import ClientDisconnect, Request

from serve_app.errors import InvalidRequestError, PayloadTooLargeError


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) anything over ``limit`` bytes before reading it where possible."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidRequestError("Content-Length is not a number.") from None
        if size > limit:
            raise PayloadTooLargeError(f"Request body is {size} bytes; the limit is {limit} bytes.")
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise PayloadTooLargeError(f"Request body exceeds the limit of {limit} bytes.")
            chunks.append(chunk)
    except ClientDisconnect:  # nobody will read the answer; refused like bad input, not an error
        raise InvalidRequestError(
            "The client closed the connection before the request body arrived.", code="client_disconnected"
        ) from None
    return b"".join(chunks)


# A \u escape of a UTF-16 surrogate (D800-DFFF): only where one occurs can a lone one hide
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _lone_surrogate(value: Any) -> bool:
    """A string anywhere in ``value`` that holds half of a UTF-16 pair (no provider can encode it).
    A walk with its own stack: as deep as the decoder allows, without Python's recursion limit."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def decode_json(body: bytes) -> Any:
    """The JSON value of ``body``; strict JSON: NaN, Infinity and lone surrogates are refused (400)
    here rather than failing at every provider later."""
    if not body.strip():
        raise InvalidRequestError("The request body is empty; send a JSON object.")
    try:
        value = json.loads(body, parse_constant=_not_json)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise InvalidRequestError("The request body is nested too deeply.") from None
    if _SURROGATE_ESCAPE.search(body) and _lone_surrogate(value):
        raise InvalidRequestError(
            "The request body is not valid JSON: a \\u escape leaves half of a UTF-16 surrogate "
            "pair, which is not a character."
        )
    return value
