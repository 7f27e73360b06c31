"""The OpenAPI document of the HTTP surface: request bodies parsed by hand, every error status a
route can answer with, and the allowed methods of a path.

The routes read their bodies themselves (one validation per request, with OpenAI's error envelope),
so FastAPI cannot see their request models; ``document_schemas`` puts them in the document, and each
route names its body with ``json_body`` and its error statuses with ``error_responses``. The
document is what schemathesis checks the router against (``tests/unit/serve_app/test_api_fuzz.py``,
``benchmarks/bad_input.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.routing import Match
from starlette.types import Scope

from serve_app.routing import AUTO_TARGET

# What each error status means; a route lists the ones it can answer with.
ERRORS = {
    400: "invalid request (bad JSON, missing or mistyped field, unsupported parameter)",
    401: "missing or invalid API key (client key, or the admin key on admin routes)",
    403: "the API key may not use the requested model, or none of its models can serve the request "
    "(code model_not_allowed)",
    404: "not found: an unknown model or key, or no ledger behind the router",
    413: "request body over the configured limit",
    429: "the key's rate limit (code rate_limit_exceeded, with Retry-After), or a budget is exhausted "
    "(code insufficient_quota)",
    502: "no provider could serve the request",
    503: "every candidate provider is unavailable or overloaded",
    504: "every candidate provider timed out",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that can answer with ``codes``, each in OpenAI's error envelope."""
    return {
        code: {
            "description": ERRORS[code],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code in codes
    }


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` of a route whose JSON body is ``model`` (registered by document_schemas)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


# One server-sent event of a streamed answer (each event, as OpenAPI 3.2's itemSchema puts it)
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "description": "a chat.completion.chunk as JSON; an {error} object if the stream broke "
            "after it started; [DONE] last",
        },
        "event": {"type": "string"},
    },
}

_TOKENS = {"type": "integer", "minimum": 0}

# A non-streamed answer (``serve_app.schemas.completion_body``): OpenAI's chat.completion, plus the
# router's ``fusion`` object (what it did; README "Every response says what the router did")
CHAT_COMPLETION: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "usage", "fusion"],
    "properties": {
        "id": {"type": "string", "pattern": "^chatcmpl-"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string", "minLength": 1},
        "choices": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "required": ["index", "message", "finish_reason"],
                "properties": {
                    "index": {"const": 0},
                    "finish_reason": {"enum": ["stop", "length", "tool_calls", "content_filter"]},
                    "message": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {
                            "role": {"const": "assistant"},
                            "content": {"type": ["string", "null"]},
                            "tool_calls": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["id", "type", "function"],
                                    "properties": {
                                        "id": {"type": "string"},
                                        "type": {"const": "function"},
                                        "function": {
                                            "type": "object",
                                            "required": ["name", "arguments"],
                                            "properties": {
                                                "name": {"type": "string"},
                                                "arguments": {"type": "string"},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
        "usage": {
            "type": "object",
            "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
            "properties": {"prompt_tokens": _TOKENS, "completion_tokens": _TOKENS, "total_tokens": _TOKENS},
        },
        "fusion": {
            "type": "object",
            "required": ["model", "provider", "policy", "request_id"],
            "properties": {"model": {"type": "string"}, "provider": {"type": "string"}},
        },
    },
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def document_schemas(
    app: FastAPI, models: list[type[BaseModel]], chat_models: list[str] | None = None
) -> None:
    """Put ``models`` (the bodies parsed by hand) and the error envelope into the OpenAPI document;
    ``chat_models``: the names a chat request's ``model`` may take (the routing policies and the
    configured models), besides ``auto:<target>``."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            found = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in found.pop("$defs", {}).items():
                components[name] = sub
            components[model.__name__] = found
        components["Error"] = ERROR_SCHEMA
        if chat_models and "ChatCompletionRequest" in components:
            components["ChatCompletionRequest"]["properties"]["model"] = {
                "title": "Model",
                "description": "a routing policy, auto:<quality target in [0, 1]>, or a configured model",
                "anyOf": [
                    {"type": "string", "enum": chat_models},
                    {"type": "string", "pattern": AUTO_TARGET.pattern},
                ],
            }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route of ``scope``'s path takes (the ``Allow`` header of a 405): Starlette
    answers with the first matching route's methods only, and a path may have several routes."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)
