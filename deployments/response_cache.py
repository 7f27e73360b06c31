"""The ResponseCache actor: the one process that owns the response cache's SQLite file
(``serve_app/response_cache.py``), so that every ingress replica, on any node, reads and writes
the same answers and an operator's flush reaches them all.

Like the BudgetLedger (``deployments/ledger.py``) it is a named, detached Ray actor per application
(``response-cache:<app>`` in the ``fusion-router`` namespace), pinned to the head node where its
file lives, restarted by Ray after a crash; the file keeps the answers across restarts. Its
methods never await, so each runs whole on the actor's event loop; expired answers are dropped
every minute, in chunks. Ingress replicas create it (or find it) at start and call
``configure`` with their settings.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from deployments.actors import in_chunks, stateful_actor_options
from serve_app.caching import LocalCacheClient
from serve_app.response_cache import CacheConfig, ResponseCache

logger = logging.getLogger("ray.serve")

PURGE_EVERY_S = 60.0
PURGE_CHUNK = 2000


def cache_name(app_name: str) -> str:
    return f"response-cache:{app_name or 'default'}"


class ResponseCacheActor(LocalCacheClient):
    """The cache's methods (``LocalCacheClient``, awaited by the ingress through the handle)."""

    def __init__(self, settings: CacheConfig) -> None:
        super().__init__(ResponseCache(settings))
        self._purge_task = asyncio.get_running_loop().create_task(self._purge_forever())
        logger.info("response cache: %s (%d answers)", self.cache.path, self.cache.stats()["entries"])

    async def purge(self) -> int:
        """Drop every expired answer, a chunk at a time with other calls served between chunks."""
        return await in_chunks(self.cache.purge, PURGE_CHUNK)

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(PURGE_EVERY_S)
            try:
                await self.purge()
            except Exception:  # a full disk must not stop the cache
                logger.exception("response cache purge failed")

    async def configure(self, settings: CacheConfig) -> None:
        """Adopt a (re)deployed application's settings; its file, if it moved."""
        now = self.cache.settings
        if settings.path != now.path or settings.synchronous != now.synchronous:
            self.cache.close()
            self.cache = ResponseCache(settings)
        else:
            self.cache.configure(settings)

    async def pid(self) -> int:
        """The actor's process (its integration test kills it)."""
        return os.getpid()


def get_or_create(app_name: str, settings: CacheConfig) -> Any:
    """The application's cache actor, created if it does not exist yet."""
    import ray

    options = stateful_actor_options(cache_name(app_name), settings.pin_to_head_node, 1)
    return ray.remote(ResponseCacheActor).options(**options).remote(settings)
