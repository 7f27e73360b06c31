"""The router's own endpoints beside the OpenAI API: statistics, feedback, and the admin API.

    GET    /v1/router/stats          per model over the rolling window (client key)
    POST   /v1/router/feedback       {"request_id", "score"}: score in [0, 1] (client key)
    GET    /v1/router/key            the calling key: its record, limits and the budgets it spends
    GET    /v1/router/usage          the calling key's own usage (``serve_app/usage_params.py``)
    POST   /v1/admin/keys            {"team", "name", "budget_usd"?, "period"?, "rpm"?, "tpm"?,
                                     "max_parallel_requests"?, "models"?, "expires_at"?} -> the
                                     new key, once
    GET    /v1/admin/keys            every key's record (never the key)
    DELETE /v1/admin/keys/{key_id}   revoke (takes effect within auth.refresh_interval_s)
    POST   /v1/admin/keys/{key_id}/rotate  {"grace_s"?} -> a new key for the same record (limits,
                                     budget, spend), once; the old one works ``grace_s`` more
    PATCH  /v1/admin/keys/{key_id}   {"rpm"?, "tpm"?, "max_parallel_requests"?, "models"?,
                                     "expires_at"?, "budget_usd"?, "period"?}: change its limits
    GET    /v1/admin/budgets         each budget: limit, period, spent, reserved, remaining
    GET    /v1/admin/usage           requests, tokens and cost per time bucket, grouped and filtered
                                     (``serve_app/usage.py``; query parameters as OpenAI's usage API)
    GET    /v1/admin/cache           the response cache: entries, size, hits and misses
    DELETE /v1/admin/cache           drop its answers (``?key_id=`` or ``?team=``: of that scope only)

Admin routes need ``Authorization: Bearer <admin key>``, the value of ``auth.admin_key_env``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve_app.accounting import Accountant
from serve_app.bodies import decode_json, read_body
from serve_app.caching import Cache
from serve_app.config import FusionConfig
from serve_app.errors import AuthenticationError, InvalidRequestError, NotFoundError
from serve_app.gateway import Gateway
from serve_app.keys import (
    MAX_EXPIRES_AT,
    MAX_GRACE_S,
    MAX_PARALLEL,
    MAX_RPM,
    MAX_TPM,
    KeyRecord,
    Period,
    check_models,
)
from serve_app.openapi_doc import error_responses, json_body
from serve_app.spend_rollup import UsageRangeError
from serve_app.usage import UsageQuery
from serve_app.usage_params import usage_parameters, usage_query, with_plain_400


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    request_id: str = Field(min_length=1, max_length=200)
    score: float = Field(ge=0, le=1, description="0 (useless) to 1 (perfect)")


class _KeyFields(BaseModel):
    """What a key may carry besides its team and name, in both the new key and the update (unset
    or null: none)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    budget_usd: float | None = Field(default=None, ge=0, description="its own budget, with period")
    period: Period | None = Field(default=None, description="the budget's period, with budget_usd")
    rpm: int | None = Field(default=None, ge=1, le=MAX_RPM, description="requests a minute; none: no limit")
    tpm: int | None = Field(default=None, ge=1, le=MAX_TPM, description="tokens a minute; none: no limit")
    max_parallel_requests: int | None = Field(
        default=None, ge=1, le=MAX_PARALLEL, description="requests in flight at once; none: no limit"
    )
    models: list[str] | None = Field(
        default=None, min_length=1, max_length=1000, description="the models it may use; none: all"
    )
    expires_at: int | None = Field(
        default=None,
        ge=0,
        le=MAX_EXPIRES_AT,
        description="Unix seconds from which it is refused (on an update, a past time expires it "
        "now); none: never",
    )


class NewKey(_KeyFields):
    team: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=100)


class KeyRotation(BaseModel):
    """``POST /v1/admin/keys/{key_id}/rotate``: how long the old key keeps working."""

    model_config = ConfigDict(extra="forbid", strict=True)
    grace_s: int = Field(
        default=0, ge=0, le=MAX_GRACE_S, description="seconds the old key keeps working (0: it stops now)"
    )


class KeyUpdate(_KeyFields):
    """``PATCH /v1/admin/keys/{key_id}``: the key's limits to change (null removes one; a budget is
    ``budget_usd`` with ``period``, both given)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})  # merged with _KeyFields'


# the bodies these routes parse, for the OpenAPI document
BODIES: list[type[BaseModel]] = [Feedback, NewKey, KeyUpdate, KeyRotation]


def _parse(model: type[BaseModel], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequestError(f"{where or 'body'}: {first['msg']}", param=where) from None


async def report(acc: Accountant, query: UsageQuery) -> dict[str, Any]:
    """A usage report from the ledger; a range that retention has emptied is a 400."""
    try:
        return await acc.ledger.usage(query)
    except UsageRangeError as exc:  # through Ray, the actor's error is also a UsageRangeError
        raise InvalidRequestError(exc.message, param=exc.param) from None


async def _json(request: Request) -> Any:
    return decode_json(await read_body(request, 65_536))


def add_router_routes(
    app: FastAPI,
    config: FusionConfig,
    gateway: Gateway,
    accountant: Accountant | None,
    caller: Callable[[Request], KeyRecord | None],
    cache: Cache | None = None,
) -> None:
    def _models(models: list[str] | None) -> tuple[str, ...] | None:
        try:
            return check_models(models, config.models)
        except ValueError as exc:
            raise InvalidRequestError(f"models: {exc}", param="models") from None

    def ledger_required() -> Accountant:
        if accountant is None:
            raise NotFoundError("This router runs without a ledger: no keys, budgets or feedback.")
        return accountant

    def admin(request: Request) -> Accountant:
        acc = ledger_required()
        acc.check_admin(request.headers.get("authorization"), request.headers.get("x-api-key"))
        return acc

    @app.get("/v1/router/stats", responses=error_responses(401))
    async def router_stats(request: Request) -> dict[str, Any]:
        caller(request)
        models: dict[str, dict[str, Any]] = {name: dict(s) for name, s in gateway.stats.items()}
        if accountant is not None:
            economics = await accountant.ledger.economics(config.stats.window_s)
            for name, row in economics.items():
                models.setdefault(
                    name, {"provider": config.models[name].provider if name in config.models else None}
                )
                models[name].update(row)
        return {"object": "router.stats", "window_s": config.stats.window_s, "models": models}

    @app.post(
        "/v1/router/feedback",
        responses=error_responses(400, 401, 404, 413),
        openapi_extra=json_body(Feedback),
    )
    async def feedback(request: Request) -> dict[str, Any]:
        key = caller(request)
        acc = ledger_required()
        given: Feedback = _parse(Feedback, await _json(request))
        model = None
        for _ in range(3):  # the request's settlement may still be in an outbox (tens of ms)
            await acc.flush()
            model = await acc.ledger.feedback(given.request_id, given.score, key.key_id if key else None)
            if model is not None:
                break
            await asyncio.sleep(config.ledger.settle_interval_s * 2)
        if model is None:
            raise NotFoundError(f"No answered request '{given.request_id}' made with this key.")
        return {
            "object": "router.feedback",
            "request_id": given.request_id,
            "model": model,
            "score": given.score,
        }

    @app.post(
        "/v1/admin/keys",
        status_code=201,
        responses=error_responses(400, 401, 404, 413),
        openapi_extra=json_body(NewKey),
    )
    async def create_key(request: Request) -> JSONResponse:
        acc = admin(request)
        spec: NewKey = _parse(NewKey, await _json(request))
        if (spec.budget_usd is None) != (spec.period is None):
            raise InvalidRequestError("A key budget needs both budget_usd and period (day or month).")
        models = _models(spec.models)
        if spec.expires_at is not None and spec.expires_at <= time.time():
            raise InvalidRequestError(
                "expires_at is in the past: the key would be made already expired", param="expires_at"
            )
        key, record = await acc.ledger.create_key(
            spec.team,
            spec.name,
            spec.budget_usd,
            spec.period,
            spec.rpm,
            models,
            spec.tpm,
            spec.expires_at,
            spec.max_parallel_requests,
        )
        await acc.refresh()
        return JSONResponse({"object": "api_key", "key": key, **record.public()}, status_code=201)

    @app.get("/v1/admin/keys", responses=error_responses(401, 404))
    async def list_keys(request: Request) -> dict[str, Any]:
        acc = admin(request)
        return {"object": "list", "data": [r.public() for r in await acc.ledger.list_keys()]}

    @app.patch(
        "/v1/admin/keys/{key_id}",
        responses=error_responses(400, 401, 404, 413),
        openapi_extra=json_body(KeyUpdate),
    )
    async def update_key(key_id: str, request: Request) -> dict[str, Any]:
        acc = admin(request)
        spec: KeyUpdate = _parse(KeyUpdate, await _json(request))
        if not spec.model_fields_set:
            raise InvalidRequestError(
                "Nothing to change: send rpm, tpm, max_parallel_requests, models, expires_at or a budget."
            )
        changes = spec.model_dump(include=spec.model_fields_set)
        if ("budget_usd" in changes) != ("period" in changes) or (
            (changes.get("budget_usd") is None) != (changes.get("period") is None)
        ):
            raise InvalidRequestError(
                "Change a key's budget with budget_usd and period together (both null removes it).",
                param="budget_usd",
            )
        if "models" in changes:
            changes["models"] = _models(spec.models)
        record = await acc.ledger.update_key(key_id, changes)
        if record is None:
            raise NotFoundError(f"No key with id '{key_id}'.")
        await acc.refresh()
        return {"object": "api_key", **record.public()}

    @app.delete("/v1/admin/keys/{key_id}", responses=error_responses(401, 404))
    async def revoke_key(key_id: str, request: Request) -> dict[str, Any]:
        acc = admin(request)
        record = await acc.ledger.revoke_key(key_id)
        if record is None:
            raise NotFoundError(f"No key with id '{key_id}'.")
        await acc.refresh()
        return {"object": "api_key", **record.public()}

    @app.post(
        "/v1/admin/keys/{key_id}/rotate",
        responses=error_responses(400, 401, 404, 413),
        openapi_extra=json_body(KeyRotation),
    )
    async def rotate_key(key_id: str, request: Request) -> dict[str, Any]:
        acc = admin(request)
        spec: KeyRotation = _parse(KeyRotation, await _json(request))
        try:
            rotated = await acc.ledger.rotate_key(key_id, spec.grace_s)
        except ValueError as exc:  # a revoked key (through Ray, the actor's error is a ValueError too)
            raise InvalidRequestError(str(exc)) from None
        if rotated is None:
            raise NotFoundError(f"No key with id '{key_id}'.")
        key, record = rotated
        await acc.refresh()
        return {"object": "api_key", "key": key, **record.public()}  # previous_key_until: its grace

    @app.get("/v1/admin/budgets", responses=error_responses(401, 404))
    async def budgets(request: Request) -> dict[str, Any]:
        acc = admin(request)
        return {"object": "list", "data": await acc.ledger.status()}

    @app.get(
        "/v1/admin/usage",
        responses=with_plain_400(error_responses(400, 401, 404)),
        openapi_extra={"parameters": usage_parameters(own_key=False)},
    )
    async def usage(request: Request) -> dict[str, Any]:
        acc = admin(request)
        query = usage_query(request.query_params.multi_items())
        await acc.flush()  # this replica's settlements not sent yet
        return await report(acc, query)

    def cache_required(request: Request) -> Cache:
        admin(request)
        if cache is None:
            raise NotFoundError("The response cache is off: set cache.enabled in the configuration.")
        return cache

    @app.get("/v1/admin/cache", responses=error_responses(401, 404))
    async def cache_stats(request: Request) -> dict[str, Any]:
        return {"object": "router.cache", **await cache_required(request).client.stats()}

    @app.delete(
        "/v1/admin/cache",
        responses=error_responses(400, 401, 404),
        openapi_extra={
            "parameters": [
                {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
                for name in ("key_id", "team")
            ]
        },
    )
    async def cache_clear(request: Request) -> dict[str, Any]:
        c = cache_required(request)
        given = dict(request.query_params.multi_items())
        unknown = sorted(set(given) - {"key_id", "team"})
        if unknown or len(given) > 1 or len(request.query_params.multi_items()) > len(given):
            raise InvalidRequestError(
                "Drop every answer (no parameters), or those of one key (key_id) or one team (team).",
                param=unknown[0] if unknown else None,
            )
        scope = next((f"{'key' if k == 'key_id' else 'team'}:{v}" for k, v in given.items()), None)
        if scope is not None and c.settings.scope != scope.split(":")[0]:
            raise InvalidRequestError(
                f"The cache's scope is '{c.settings.scope}': its answers are not kept per "
                f"{scope.split(':')[0]}.",
                param=next(iter(given)),
            )
        deleted = await c.client.clear(scope)
        return {"object": "router.cache", "deleted": deleted, "scope": scope or "all"}

    # -- a client key's view of itself ---------------------------------------------------------------

    def own_key(request: Request) -> tuple[KeyRecord, Accountant]:
        key = caller(request)
        if key is None:
            raise AuthenticationError(
                "This route describes the API key that calls it, and the request has no API key "
                "(send it as 'Authorization: Bearer <key>')."
            )
        return key, ledger_required()

    @app.get("/v1/router/key", responses=error_responses(401, 404))
    async def key_info(request: Request) -> dict[str, Any]:
        key, acc = own_key(request)
        await acc.flush()
        scopes = acc.scopes(key)
        budgets = [row for row in await acc.ledger.status() if row["scope"] in scopes]
        return {"object": "router.key", **key.public(), "budgets": budgets}

    @app.get(
        "/v1/router/usage",
        responses=with_plain_400(error_responses(400, 401, 404)),
        openapi_extra={"parameters": usage_parameters(own_key=True)},
    )
    async def own_usage(request: Request) -> dict[str, Any]:
        key, acc = own_key(request)
        query = usage_query(request.query_params.multi_items(), own_key_id=key.key_id)
        await acc.flush()
        return await report(acc, query)
