"""Usage reports: the SQL over the ledger's spend rows, the query's checks, the admin route and the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from serve_app.cli import cli
from serve_app.config import FusionConfig
from serve_app.emulator import EmulatorServer
from serve_app.ledger import BudgetsConfig, Charge, Ledger
from serve_app.usage import UsageQuery, read_usage
from tests.unit.serve_app.inprocess import config_file, emulated_config
from tests.unit.serve_app.test_accounting import Router, _router

DAY = 86_400
T0 = 1_764_115_200  # 2025-11-26 00:00 UTC


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _spend(ledger: Ledger, clock: Clock, at: float, rid: str, **charge: Any) -> None:
    clock.now = at
    ledger.settle([Charge(rid, **charge)])


def _charge(cost: float, tokens: tuple[int, int], **more: Any) -> dict[str, Any]:
    return {"cost_usd": cost, "input_tokens": tokens[0], "output_tokens": tokens[1], **more}


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    clock = Clock(T0)
    led = Ledger(tmp_path / "ledger.db", clock=clock)
    red = {"team": "red", "provider": "openai", "model": "gpt-4o"}
    blue = {"team": "blue", "key_id": "k2"}
    rows = [  # (when, request id, charge)
        (T0 + 10, "a", _charge(0.01, (100, 10), **red, key_id="k1", cached_tokens=40)),
        (T0 + 20, "b", _charge(0.02, (200, 20), **red, key_id="k1", reasoning_tokens=5)),
        (T0 + 3600, "c", _charge(0.5, (1000, 100), **blue, model="claude", cache_write_tokens=300)),
        (T0 + 3700, "d", _charge(0.0, (0, 0), **blue)),  # a released hold: no model answered
        (T0 + 2 * DAY + 5, "e", _charge(0.03, (300, 30), **red, key_id="k3")),
    ]
    for at, rid, charge in rows:
        _spend(led, clock, at, rid, **charge)
    clock.now = T0 + 3 * DAY - 1
    yield led
    led.close()


def _q(**kw: Any) -> UsageQuery:
    return UsageQuery.model_validate({"start_time": T0, **kw})


def test_daily_buckets_sum_requests_tokens_and_cost(ledger: Ledger) -> None:
    page = read_usage(ledger.path, _q(), now=ledger.clock())
    assert page["object"] == "page" and page["has_more"] is False and page["next_page"] is None
    assert [(b["start_time"], b["end_time"]) for b in page["data"]] == [
        (T0 + i * DAY, T0 + (i + 1) * DAY) for i in range(3)
    ]
    first, empty, third = (b["results"] for b in page["data"])
    assert empty == []  # an empty day is still a bucket, as in OpenAI's usage API
    assert first == [
        {
            "object": "router.usage.result",
            "num_model_requests": 3,  # the released hold served no model
            "input_tokens": 1300,
            "input_cached_tokens": 40,
            "cache_write_tokens": 300,
            "output_tokens": 130,
            "reasoning_tokens": 5,
            "cost_usd": pytest.approx(0.53),
        }
    ]
    assert third[0]["num_model_requests"] == 1 and third[0]["cost_usd"] == pytest.approx(0.03)


def test_grouping_and_filters(ledger: Ledger) -> None:
    page = read_usage(ledger.path, _q(group_by=["team", "model"], limit=1), now=ledger.clock())
    results = page["data"][0]["results"]
    assert [(r["team"], r["model"], r["num_model_requests"]) for r in results] == [
        ("blue", "claude", 1),  # dearest first
        ("red", "gpt-4o", 2),
        ("blue", None, 0),
    ]
    assert "provider" not in results[0]
    only = read_usage(
        ledger.path, _q(group_by=["key_id"], teams=["red"], models=["gpt-4o"]), now=ledger.clock()
    )
    keys = [(r["key_id"], r["cost_usd"]) for b in only["data"] for r in b["results"]]
    assert keys == [("k1", pytest.approx(0.03)), ("k3", pytest.approx(0.03))]
    by_key = read_usage(ledger.path, _q(key_ids=["k2"], bucket_width="1h", limit=2), now=ledger.clock())
    assert [len(b["results"]) for b in by_key["data"]] == [0, 1]  # the first hour had only red's requests


def test_pages_follow_next_page_to_the_end(ledger: Ledger) -> None:
    seen: list[int] = []
    query = _q(bucket_width="1h", limit=30, start_time=T0 + 1800)  # aligned down to T0
    pages = 0
    while True:
        page = read_usage(ledger.path, query, now=ledger.clock())
        pages += 1
        seen += [b["start_time"] for b in page["data"]]
        if not page["has_more"]:
            break
        query = query.model_copy(update={"page": page["next_page"]})
    assert pages == 3 and seen == [T0 + h * 3600 for h in range(72)]
    # the first bucket starts at the hour but counts from start_time: request a (T0+10) is left out
    first = read_usage(ledger.path, _q(start_time=T0 + 15, end_time=T0 + 3600), now=ledger.clock())
    assert first["data"][0]["results"][0]["num_model_requests"] == 1


def test_a_minute_report_over_years_stays_one_page(ledger: Ledger) -> None:
    page = read_usage(ledger.path, UsageQuery(start_time=0, bucket_width="1m"), now=ledger.clock())
    assert len(page["data"]) == 60 and page["has_more"] and page["next_page"] == "3600"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"bucket_width": "1d", "limit": 32}, "limit: at most 31"),
        ({"bucket_width": "1h", "limit": 169}, "limit: at most 168"),
        ({"end_time": T0}, "end_time: must be after"),
        ({"group_by": ["team", "team"]}, "named twice"),
        ({"page": "12a"}, "page: not a next_page"),
        ({"page": str(T0 + 7)}, "page: not a next_page of this query"),
        ({"group_by": ["cost"]}, "group_by"),
        ({"bucket_width": "1w"}, "bucket_width"),
        ({"color": "red"}, "color"),
    ],
)
def test_bad_queries_are_refused(query: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _q(**query)


def test_reads_a_closed_ledger_and_one_being_written(tmp_path: Path) -> None:
    clock = Clock(T0 + 5)
    led = Ledger(tmp_path / "l.db", clock=clock)
    led.settle([Charge("x", 0.1, model="m")])
    assert read_usage(led.path, _q(), now=T0 + 10)["data"][0]["results"][0]["num_model_requests"] == 1
    led.settle([Charge("y", 0.1, model="m")])  # committed while the reader's file is open elsewhere
    assert read_usage(led.path, _q(), now=T0 + 10)["data"][0]["results"][0]["num_model_requests"] == 2
    led.close()  # the WAL is checkpointed and removed: a read-only reader must still open it
    assert read_usage(led.path, _q(), now=T0 + 10)["data"][0]["results"][0]["cost_usd"] == pytest.approx(0.2)


# -- the admin route ------------------------------------------------------------------------------


@pytest.fixture
async def router(emu: EmulatorServer, config: FusionConfig, tmp_path: Path) -> AsyncIterator[Router]:
    async for r in _router(emulated_config(config, emu.url), tmp_path):
        yield r


async def test_admin_usage_reports_what_the_router_served(router: Router) -> None:
    made = (await router.admin("POST", "/v1/admin/keys", json={"team": "red", "name": "nb"})).json()
    for model in ("gpt-4o-mini", "gpt-4o-mini", "claude-haiku-4-5"):
        assert (await router.chat(made["key"], model=model)).status_code == 200
    start = int(router.ledger.clock()) - 60
    query = f"start_time={start}&group_by=team&group_by=model&bucket_width=1h"
    r = await router.admin("GET", f"/v1/admin/usage?{query}")
    assert r.status_code == 200, r.text  # no flush first: the route sends this replica's outbox itself
    results: dict[tuple[str, str], dict[str, float]] = {}  # summed over buckets (an hour may turn)
    for x in (x for b in r.json()["data"] for x in b["results"]):
        row = results.setdefault((x["team"], x["model"]), {"requests": 0, "cost": 0.0, "output": 0})
        row["requests"] += x["num_model_requests"]
        row["cost"] += x["cost_usd"]
        row["output"] += x["output_tokens"]
    assert set(results) == {("red", "gpt-4o-mini"), ("red", "claude-haiku-4-5")}
    assert results[("red", "gpt-4o-mini")]["requests"] == 2 and results[("red", "gpt-4o-mini")]["output"] > 0
    assert sum(x["cost"] for x in results.values()) == pytest.approx(router.ledger.settled_total())
    commas = await router.admin("GET", f"/v1/admin/usage?start_time={start}&group_by=team,model")
    assert commas.status_code == 400 and commas.json()["error"]["param"] == "group_by"  # repeat it instead


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("", "start_time"),
        ("start_time=soon", "start_time"),
        ("start_time=0.0", "start_time"),
        ("start_time=1&limit=1e1", "limit"),
        ("start_time=1&start_time=2", "start_time"),
        ("start_time=1&bucket_width=1w", "bucket_width"),
        ("start_time=1&group_by=cost", "group_by"),
        ("start_time=1&limit=0", "limit"),
        ("start_time=1&limit=40", "limit"),
        ("start_time=5&end_time=5", "end_time"),
        ("start_time=1&page=x", "page"),
        ("start_time=1&colour=red", "colour"),
        ("start_time=1&models=", "models"),
    ],
)
async def test_admin_usage_refuses_bad_queries_naming_the_parameter(
    router: Router, query: str, param: str
) -> None:
    r = await router.admin("GET", f"/v1/admin/usage?{query}")
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"


async def test_a_report_reaching_past_the_kept_rows_is_a_400_naming_the_parameter(router: Router) -> None:
    assert (await router.chat(None, model="gpt-4o-mini")).status_code == 200
    served = int(router.ledger.clock())
    await router.admin("GET", f"/v1/admin/usage?start_time={served}")  # settles it
    router.ledger.clock = lambda: served + 2 * DAY  # two days on, with rows kept for one
    assert router.ledger.prune(retention_s=DAY) == 1
    minutes = await router.admin("GET", f"/v1/admin/usage?start_time={served - 60}&bucket_width=1m")
    assert minutes.status_code == 400, minutes.text
    error = minutes.json()["error"]
    assert error["param"] == "bucket_width" and "retention_days" in error["message"]
    hour = served - served % 3600
    hours = await router.admin("GET", f"/v1/admin/usage?start_time={hour}&bucket_width=1h&limit=168")
    assert hours.status_code == 200, hours.text  # the hourly totals are kept
    assert sum(r["num_model_requests"] for b in hours.json()["data"] for r in b["results"]) == 1


async def test_admin_usage_needs_the_admin_key(router: Router) -> None:
    r = await router.client.get("/v1/admin/usage?start_time=0")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


# -- the CLI ----------------------------------------------------------------------------------------


def test_cli_prints_usage_per_bucket(ledger: Ledger, tmp_path: Path) -> None:
    config = config_file(tmp_path, ledger.path)
    run = CliRunner().invoke
    args = [
        "usage",
        "--since",
        "2025-11-26",
        "--until",
        str(T0 + 3 * DAY),
        "--group-by",
        "team",
        "-c",
        str(config),
    ]
    out = run(cli, args)
    assert out.exit_code == 0, out.output
    assert out.output.splitlines() == [
        "2025-11-26  team=blue  requests=1 input=1000 (cached 0) output=100 (reasoning 0) cost=$0.500000",
        "2025-11-26  team=red  requests=2 input=300 (cached 40) output=30 (reasoning 5) cost=$0.030000",
        "2025-11-28  team=red  requests=1 input=300 (cached 0) output=30 (reasoning 0) cost=$0.030000",
    ]
    hourly = run(cli, [*args[:5], "--bucket", "1h", "--json", "--teams", "blue", "-c", str(config)])
    assert hourly.exit_code == 0, hourly.output
    assert [json.loads(line)["start_time"] for line in hourly.output.splitlines()] == [T0 + 3600]
    bad = run(cli, ["usage", "--since", "last week", "-c", str(config)])
    assert bad.exit_code == 2 and "7d, 12h, 30m" in bad.output
    ledger.clock = lambda: T0 + 3 * DAY
    assert ledger.prune(retention_s=DAY) == 4  # the rows of the first two days
    minutes = run(cli, [*args[:5], "--bucket", "1m", "-c", str(config)])
    assert minutes.exit_code == 2 and "retention_days" in minutes.output
    assert run(cli, args).output.splitlines() == out.output.splitlines()  # daily: from the totals
    inside_an_hour = ["usage", "--since", str(T0 + 3605), "--until", str(T0 + 2 * DAY - 5), *args[5:]]
    widened = run(cli, inside_an_hour)  # to whole days: T0 to T0 + 2 days, all from the totals
    assert widened.exit_code == 0 and widened.output.splitlines() == out.output.splitlines()[:2]


# -- a client's view of its own key ------------------------------------------------------------------


async def test_a_key_sees_its_own_record_budgets_and_usage(
    emu: EmulatorServer, config: FusionConfig, tmp_path: Path
) -> None:
    cfg = emulated_config(config, emu.url)
    budgets = BudgetsConfig.model_validate(
        {
            "global": {"limit_usd": 100.0, "period": "month"},
            "teams": {"red": {"limit_usd": 50, "period": "day"}},
        }
    )
    async for router in _router(cfg.model_copy(update={"budgets": budgets}), tmp_path):
        spec = {"team": "red", "name": "nb", "budget_usd": 5, "period": "day", "rpm": 100}
        mine = (await router.admin("POST", "/v1/admin/keys", json=spec)).json()
        theirs = (await router.admin("POST", "/v1/admin/keys", json={"team": "blue", "name": "x"})).json()
        start = int(time.time()) - 1
        for key, model in ((mine, "gpt-4o-mini"), (mine, "claude-haiku-4-5"), (theirs, "gpt-4o-mini")):
            assert (await router.chat(key["key"], model=model)).status_code == 200
        me = {"authorization": f"Bearer {mine['key']}"}
        info = (await router.client.get("/v1/router/key", headers=me)).json()
        assert info["object"] == "router.key" and info["key_id"] == mine["key_id"] and "key" not in info
        assert info["team"] == "red" and info["rpm"] == 100 and info["expires_at"] is None
        budgets_seen = {b["scope"]: b for b in info["budgets"]}
        assert set(budgets_seen) == {"global", "team:red", f"key:{mine['key_id']}"}  # not blue's
        assert budgets_seen[f"key:{mine['key_id']}"]["spent_usd"] > 0  # sent before answering
        assert budgets_seen["global"]["spent_usd"] > budgets_seen[f"key:{mine['key_id']}"]["spent_usd"]

        usage = await router.client.get(f"/v1/router/usage?start_time={start}&group_by=model", headers=me)
        assert usage.status_code == 200, usage.text
        rows = [r for b in usage.json()["data"] for r in b["results"]]
        assert sorted(r["model"] for r in rows) == ["claude-haiku-4-5", "gpt-4o-mini"]  # its own only
        assert sum(r["num_model_requests"] for r in rows) == 2
        for query in ("key_ids=x", "teams=blue", "group_by=key_id", "group_by=team"):
            refused = await router.client.get(f"/v1/router/usage?start_time=0&{query}", headers=me)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["param"] in ("key_ids", "teams", "group_by")
        for path in ("/v1/router/key", "/v1/router/usage?start_time=0"):
            r = await router.client.get(path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


async def test_without_keys_the_key_routes_say_there_is_no_key(router: Router) -> None:
    r = await router.client.get("/v1/router/key")
    assert r.status_code == 401 and "no API key" in r.json()["error"]["message"]
