"""The ResponseCache actor's own methods, without Ray: expired answers dropped in chunks with its
other calls served between them, and a redeploy that moves its file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from deployments import response_cache as cache_actor
from serve_app.response_cache import CacheConfig, CachedAnswer


def _answer(i: int) -> CachedAnswer:
    return CachedAnswer(f"chatcmpl-{i}", "gpt-4o-mini", "openai", "gpt-4o-mini", f"answer {i}", "stop", {})


async def test_expired_answers_go_in_chunks_between_other_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_actor, "PURGE_CHUNK", 7)
    actor = cache_actor.ResponseCacheActor(CacheConfig(enabled=True, path=str(tmp_path / "c.db"), ttl_s=60))
    now = [1_000_000.0]
    actor.cache._clock = lambda: now[0]
    try:
        for i in range(20):
            await actor.put(bytes([i]) * 32, "global", _answer(i))
        now[0] += 30
        await actor.put(b"fresh" * 7, "global", _answer(99))
        now[0] += 31  # the first 20 are past their 60 s, the last one is not
        seen: list[int] = []

        async def another_call() -> None:
            seen.append((await actor.stats())["entries"])

        other = asyncio.ensure_future(another_call())
        assert await actor.purge() == 20
        await other
        assert seen == [21 - 7]  # served between the first chunk and the second
        assert actor.cache.entries == 1 and await actor.get(b"fresh" * 7, None) is not None

        moved = CacheConfig(enabled=True, path=str(tmp_path / "moved.db"))
        await actor.configure(moved)  # a redeploy with another file: the actor opens it
        assert actor.cache.path == tmp_path / "moved.db" and actor.cache.entries == 0
    finally:
        actor._purge_task.cancel()
        actor.cache.close()
