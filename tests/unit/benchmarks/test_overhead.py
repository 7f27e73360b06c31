"""The benchmarks' closed-loop client counts what went wrong, by kind (against a local server)."""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from benchmarks.overhead import closed_loop


async def test_errors_are_counted_by_kind() -> None:
    seen = 0

    async def chat(request: web.Request) -> web.Response:
        nonlocal seen
        index, seen = seen, seen + 1  # 0 is the worker's unmeasured warm-up call
        if index % 3 == 1:
            return web.json_response({"error": {"message": "busy"}}, status=503)
        model = "other" if index % 3 == 2 else "gpt-4o-mini"
        return web.json_response({"ok": True}, headers={"x-fusion-model": model})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        kinds: Counter[str] = Counter()
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        latencies, errors, _ = await closed_loop(url, {"model": "auto"}, 1, 6, "gpt-4o-mini", None, kinds)
    finally:
        await runner.cleanup()
    assert len(latencies) == 2 and errors == 4
    assert kinds == Counter({"http 503": 2, "model other": 2})
