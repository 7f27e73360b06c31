"""Does a key's rate limit hold across ingress replicas, and what does it cost a request?

    python -m benchmarks.rate_limits [--rpm 120] [--seconds 30] [--clients 8] [--rounds 300]

Starts the emulator at zero latency and the full graph on a local Ray (num_cpus=2) with two
ingress replicas (Serve spreads requests over both), the ledger in a temporary SQLite file, and
four keys: one limited to ``--rpm`` requests a minute, one to ``--tpm`` tokens a minute, one
with a request limit too high to reach, and one with none. Then:

1. ``--clients`` concurrent clients send requests with the limited key, as fast as they are
   answered, for ``--seconds``. GCRA admits a full bucket (``rpm``) at once and then ``rpm / 60``
   a second, so over the run it should admit ``rpm x (1 + seconds / 60)``, give or take one
   request and one second's refill; every refusal must be 429 ``rate_limit_exceeded`` with
   ``Retry-After``;
2. the same with the token-limited key: the prompts' and answers' tokens of the admitted requests
   should come to ``tpm x (1 + seconds / 60)``, give or take the answers in flight when the
   bucket ran dry (an answer's tokens are charged after it, and may overdraw);
3. the same with two keys of one team, half the clients on each, whose keys have no limits of
   their own and whose team is limited to ``--team-rpm`` in the config (``rate_limits.teams``):
   together they should be admitted ``team_rpm x (1 + seconds / 60)``;
4. sequential requests, interleaved, with the key whose limit is never reached and the key with
   none: the difference is what counting a request on the ledger costs.

Writes benchmarks/results/rate_limits.json and rate_limits.png (admitted requests over time
against the limit; latency CDFs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.harness import interleaved, local_router
from benchmarks.report import added_cost, latency_cdfs, pyplot, write_result
from serve_app.config import DEFAULT_CONFIG_PATH
from serve_app.ledger import Ledger
from serve_app.schemas import parse_request

RESULTS = Path(__file__).resolve().parent / "results"
BODY = {"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "Name a river."}]}
INGRESS_REPLICAS = 2


TEAM = "shared"  # the team whose keys share --team-rpm


def write_config(workdir: Path, team_rpm: int | None = None) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    if team_rpm is not None:
        data["rate_limits"] = {"teams": {TEAM: {"rpm": team_rpm}}}
    data["providers"]["meta"] = {"kind": "openai_compatible", "api_key_env": "FUSION_LLAMA_API_KEY"}
    data["deployments"]["provider_overrides"] = {}
    data["deployments"]["ingress"] = {"num_replicas": INGRESS_REPLICAS, "num_cpus": 0.1}
    data["ledger"] = {"path": str(workdir / "ledger.db")}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def hammer(router: str, key: str | list[str], clients: int, seconds: float) -> list[dict[str, Any]]:
    """Closed loop: each client sends its next request when the last is answered (with several
    keys, client i uses key i mod their number)."""
    keys = [key] if isinstance(key, str) else key
    start = time.monotonic()
    out: list[dict[str, Any]] = []

    async def client_loop(client: httpx.AsyncClient, i: int) -> None:
        headers = {"authorization": f"Bearer {keys[i % len(keys)]}"}
        while time.monotonic() - start < seconds:
            r = await client.post(f"{router}/v1/chat/completions", json=BODY, headers=headers)
            error = r.json().get("error", {}) if r.status_code != 200 else {}
            out.append(
                {
                    "at_s": time.monotonic() - start,
                    "status": r.status_code,
                    "code": error.get("code"),
                    "retry_after": r.headers.get("retry-after"),
                    "output_tokens": r.json()["usage"]["completion_tokens"] if r.status_code == 200 else 0,
                    "remaining_tokens": r.headers.get("x-ratelimit-remaining-tokens"),
                    "key": i % len(keys),
                }
            )

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=clients)) as client:
        await asyncio.gather(*(client_loop(client, i) for i in range(clients)))
    return out


def _team_result(sent: list[dict[str, Any]], team_rpm: int) -> dict[str, Any]:
    """Two keys of one team, no limits of their own, sharing the team's ``team_rpm``."""
    ok = [s for s in sent if s["status"] == 200]
    expected = team_rpm * (1 + max(s["at_s"] for s in ok) / 60)
    refused = [s for s in sent if s["status"] != 200]
    return {
        "team_rpm": team_rpm,
        "keys": 2,
        "sent": len(sent),
        "admitted": len(ok),
        "admitted_per_key": [sum(s["key"] == k for s in ok) for k in range(2)],
        "expected_admitted": round(expected, 1),  # team_rpm x (1 + t/60) at the last admitted request
        "admitted_over_expected": round(len(ok) / expected, 4),
        "refused_codes": sorted({f"{s['status']} {s['code']}" for s in refused}),
        "refusals_without_retry_after": sum(s["retry_after"] is None for s in refused),
    }


def plot(
    result: dict[str, Any], sent: list[dict[str, Any]], latencies: dict[str, list[float]], path: Path
) -> None:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    ok = sorted(s["at_s"] for s in sent if s["status"] == 200)
    a.step(ok, range(1, len(ok) + 1), where="post", label="admitted")
    rpm, seconds = result["rpm"], result["seconds"]
    xs = [0.0, seconds]
    a.plot(xs, [rpm + rpm * x / 60 for x in xs], "r--", lw=1, label="limit: rpm x (1 + t / 60)")
    a.set_xlabel("seconds")
    a.set_ylabel("requests admitted")
    a.set_title(f"{result['clients']} clients, {INGRESS_REPLICAS} ingress replicas, rpm {rpm}")
    a.legend()
    latency_cdfs(b, latencies, "what the limit costs a request")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rpm", type=int, default=120)
    parser.add_argument("--tpm", type=int, default=6000)
    parser.add_argument("--team-rpm", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=300, help="sequential requests per key (cost)")
    parser.add_argument("--out", default=str(RESULTS / "rate_limits.json"))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fusion-rate-"))
    config_path = write_config(workdir, args.team_rpm)
    ledger = Ledger(workdir / "ledger.db")
    limited = ledger.keys.create("bench", "limited", rpm=args.rpm)[0]
    tokens = ledger.keys.create("bench", "tokens", tpm=args.tpm)[0]
    roomy = ledger.keys.create("bench", "roomy", rpm=10_000_000)[0]
    free = ledger.keys.create("bench", "free")[0]
    team_keys = [ledger.keys.create(TEAM, f"member-{i}")[0] for i in range(2)]
    ledger.close()

    with local_router(latency_scale=0.0, config_path=str(config_path)) as (router, _):
        sent = asyncio.run(hammer(router, limited, args.clients, args.seconds))
        sent_tokens = asyncio.run(hammer(router, tokens, args.clients, args.seconds))
        sent_team = asyncio.run(hammer(router, team_keys, args.clients, args.seconds))
        keyed = {"limited (never reached)": roomy, "no limit": free}
        latencies = asyncio.run(interleaved(router, keyed, BODY, args.rounds))

    team = _team_result(sent_team, args.team_rpm)
    admitted = sum(s["status"] == 200 for s in sent)
    last = max(s["at_s"] for s in sent if s["status"] == 200)
    expected = args.rpm * (1 + last / 60)
    refused = [s for s in sent if s["status"] != 200]
    limited_ms, free_ms = latencies["limited (never reached)"], latencies["no limit"]
    # tokens: each admitted request spent its prompt (the router's estimate, by the router's own
    # function; it was read from the first answer's remaining tokens, which counted two prompts
    # whenever the first answer was not the first admitted) and its answer
    ok_tokens = sorted((s for s in sent_tokens if s["status"] == 200), key=lambda s: s["at_s"])
    prompt = parse_request(BODY).prompt_tokens_upper()
    spent_tokens = sum(prompt + s["output_tokens"] for s in ok_tokens)
    allowed_tokens = args.tpm * (1 + ok_tokens[-1]["at_s"] / 60)
    largest = prompt + max(s["output_tokens"] for s in ok_tokens)
    result = {
        "rpm": args.rpm,
        "seconds": args.seconds,
        "clients": args.clients,
        "ingress_replicas": INGRESS_REPLICAS,
        "sent": len(sent),
        "admitted": admitted,
        "expected_admitted": round(expected, 1),  # rpm x (1 + t/60) at the last admitted request
        "admitted_over_expected": round(admitted / expected, 4),
        "refused": len(refused),
        "refused_codes": sorted({f"{s['status']} {s['code']}" for s in refused}),
        "refusals_without_retry_after": sum(s["retry_after"] is None for s in refused),
        "tokens": {
            "tpm": args.tpm,
            "sent": len(sent_tokens),
            "admitted": len(ok_tokens),
            "prompt_tokens_counted": prompt,
            "spent_tokens": spent_tokens,  # prompts and answers of the admitted requests
            "allowed_tokens": round(allowed_tokens, 1),  # tpm x (1 + t/60) at the last admitted request
            "spent_over_allowed": round(spent_tokens / allowed_tokens, 4),
            "refused_codes": sorted(
                {f"{s['status']} {s['code']}" for s in sent_tokens if s["status"] != 200}
            ),
        },
        "team": team,
        "cost_per_request": added_cost(limited_ms, free_ms, "limited", "no_limit"),
        "goals": {
            # within one request plus one second's refill (times are taken at the answer, not the count)
            "limit_holds": abs(admitted - expected) <= 1.0 + args.rpm / 60,
            "every_refusal_is_429_rate_limit_exceeded": all(
                s["status"] == 429 and s["code"] == "rate_limit_exceeded"
                for s in refused + [s for s in sent_tokens + sent_team if s["status"] != 200]
            ),
            # the last answers may overdraw by what one request spends per client in flight
            "team_limit_holds": abs(team["admitted"] - team["expected_admitted"]) <= 1.0 + args.team_rpm / 60,
            "token_limit_holds": allowed_tokens - largest
            <= spent_tokens
            <= allowed_tokens + args.clients * largest,
        },
        "machine": f"{os.cpu_count()} CPUs, emulator and graph on 127.0.0.1",
    }
    write_result(Path(args.out), result, lambda r, path: plot(r, sent, latencies, path))


if __name__ == "__main__":
    main()
