"""The usage routes' query parameters: read from the URL into a ``UsageQuery`` (400 in OpenAI's
envelope naming the first wrong one), and described for the OpenAPI document.

    GET /v1/admin/usage    any key's, team's or model's usage (the admin key)
    GET /v1/router/usage   the calling client key's own usage: no ``teams`` or ``key_ids`` filter,
                           no grouping by ``team`` or ``key_id``

A parameter that takes several values is repeated (``group_by=team&group_by=model``), as in
OpenAI's usage API; the others may be given once. Times and ``limit`` are whole numbers in
digits (``5.0`` or ``1e3`` is refused rather than read as 5 or 1000).
"""

from __future__ import annotations

import re
from typing import Any, get_args

from pydantic import ValidationError

from serve_app.errors import InvalidRequestError
from serve_app.usage import PAGE_LIMITS, WIDTH_S, GroupField, UsageQuery

LISTS = ("group_by", "models", "teams", "key_ids")
WHOLE = ("start_time", "end_time", "limit")
OTHER_KEYS = {"teams": None, "key_ids": None, "group_by": ("team", "key_id")}  # not on a key's own


def usage_query(params: list[tuple[str, str]], own_key_id: str | None = None) -> UsageQuery:
    """The query of ``params`` (a URL's name-value pairs, in order). With ``own_key_id`` (a client
    key asking about itself) it covers that key alone, and may not name other keys or teams."""
    raw: dict[str, Any] = {}
    for name, value in params:
        if own_key_id is not None and name in OTHER_KEYS:
            refused = OTHER_KEYS[name]
            if refused is None or value in refused:
                raise InvalidRequestError(f"{name}: a key's own usage covers that key alone", param=name)
        if name in LISTS:
            raw.setdefault(name, []).append(value)
        elif name in raw:
            raise InvalidRequestError(f"{name}: given more than once", param=name)
        elif name in WHOLE and not re.fullmatch(r"[0-9]{1,12}", value):
            raise InvalidRequestError(f"{name}: Input should be a whole number", param=name)
        else:
            raw[name] = value
    if own_key_id is not None:
        raw["key_ids"] = [own_key_id]
    try:
        return UsageQuery.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["loc"]:
            where = str(first["loc"][0])
            raise InvalidRequestError(f"{where}: {first['msg']}", param=where) from None
        message = first["msg"].removeprefix("Value error, ")  # the query's own checks name the field
        raise InvalidRequestError(message, param=message.split(":")[0]) from None


def _list(name: str, items: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "style": "form", "explode": True, "schema": items}


def usage_parameters(own_key: bool) -> list[dict[str, Any]]:
    """The ``parameters`` of a usage route's OpenAPI operation (``own_key``: /v1/router/usage)."""
    whole = {"type": "integer", "minimum": 0, "maximum": 10**11}
    groups = [g for g in get_args(GroupField) if not (own_key and g in ("team", "key_id"))]
    names = ("models",) if own_key else ("models", "teams", "key_ids")
    most = max(m for _, m in PAGE_LIMITS.values())
    return [
        {
            "name": "start_time",
            "in": "query",
            "required": True,
            "schema": whole,
            "description": "Unix seconds",
        },
        {"name": "end_time", "in": "query", "schema": whole, "description": "exclusive; default now"},
        {"name": "bucket_width", "in": "query", "schema": {"enum": list(WIDTH_S)}},
        _list("group_by", {"type": "array", "items": {"enum": groups}}),
        *[
            _list(
                n,
                {
                    "type": "array",
                    "maxItems": 100,
                    "items": {"type": "string", "minLength": 1, "maxLength": 200},
                },
            )
            for n in names
        ],
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": most},
            "description": "buckets per page (1m: 1,440 at most; 1h: 168; 1d: 31)",
        },
        {
            "name": "page",
            "in": "query",
            "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
            "description": "the next_page of the previous page",
        },
    ]


def with_plain_400(responses: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """A GET route's error responses, its 400 also in plain text: a URL too long for the HTTP
    server (tens of KB of query) is refused by the server itself, before the router sees it."""
    bad = responses[400]
    bad["description"] += "; a URL too long for the HTTP server gets the server's own plain-text 400"
    bad["content"]["text/plain"] = {"schema": {"type": "string"}}
    return responses
