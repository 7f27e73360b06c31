"""How the application's side actors that own a SQLite file (the BudgetLedger, the ResponseCache)
are made: named per application in the ``fusion-router`` namespace, found again when they exist,
detached (they outlive the application), restarted by Ray after a crash, using no CPU slot, and
pinned to the head node, where their file lives, unless told otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from deployments.autoscaling import NAMESPACE


def stateful_actor_options(name: str, pin_to_head_node: bool, max_task_retries: int) -> dict[str, Any]:
    """``max_task_retries``: how often a call in flight at a crash runs again on the restarted
    actor (-1: until it does; only for calls that are idempotent)."""
    options: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "get_if_exists": True,
        "lifetime": "detached",
        "max_restarts": -1,
        "max_task_retries": max_task_retries,
        "num_cpus": 0,
    }
    if pin_to_head_node:
        options["resources"] = {"node:__internal_head__": 0.001}
    return options


async def in_chunks(step: Callable[[int], int], chunk: int) -> int:
    """Call ``step(chunk)`` (drop at most ``chunk`` rows, return how many went) until it drops
    fewer, letting the actor serve its other calls between steps; how many went in all."""
    dropped = 0
    while True:
        n = step(chunk)
        dropped += n
        if n < chunk:
            return dropped
        await asyncio.sleep(0.005)
