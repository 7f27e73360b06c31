"""Fault injection for the emulator, chosen per model and changed at run time.

Kinds and where they strike:

- ``http_error``: answer ``status`` (429, 500, 503, 529, ...) in the provider's own error format,
  with ``Retry-After: retry_after`` when given.
- ``refuse``: reset the TCP connection before any byte of a response (what a client sees from a
  dead upstream; a provider pointed at a closed port gives the true ECONNREFUSED).
- ``timeout``: accept the request and send nothing for ``delay_s`` seconds.
- ``stall``: streaming: after ``after_tokens`` tokens (0 = before the first) send nothing for
  ``delay_s`` seconds; non-streaming: same as ``timeout``.
- ``cut``: streaming: after ``after_tokens`` tokens, reset the connection mid-stream;
  non-streaming: reset before the response.
- ``malformed``: streaming: after ``after_tokens`` tokens, send a chunk that is not JSON;
  non-streaming: a 200 whose body is not JSON.

``times`` limits how many requests the fault hits (None = until cleared); ``probability`` makes
it strike at random. A fault keyed ``*`` applies to every model without its own fault.
"""

from __future__ import annotations

import random
import threading
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FaultKind = Literal["http_error", "refuse", "timeout", "stall", "cut", "malformed"]


class FaultSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    status: int = Field(default=503, ge=400, le=599)
    retry_after: float | None = Field(default=None, ge=0)
    delay_s: float = Field(default=60.0, ge=0)
    after_tokens: int = Field(default=0, ge=0)
    times: int | None = Field(default=None, ge=1)
    probability: float = Field(default=1.0, ge=0, le=1)


class FaultBook:
    """Thread-safe map model -> fault, consulted once per request."""

    def __init__(self, seed: int | None = None) -> None:
        self._faults: dict[str, FaultSpec] = {}
        self._remaining: dict[str, int | None] = {}
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def set(self, model: str, spec: FaultSpec) -> None:
        with self._lock:
            self._faults[model] = spec
            self._remaining[model] = spec.times

    def clear(self, model: str | None = None) -> None:
        with self._lock:
            if model is None:
                self._faults.clear()
                self._remaining.clear()
            else:
                self._faults.pop(model, None)
                self._remaining.pop(model, None)

    def snapshot(self) -> dict[str, FaultSpec]:
        with self._lock:
            return dict(self._faults)

    def draw(self, model: str) -> FaultSpec | None:
        """The fault that hits this request, if any (consumes one of ``times``)."""
        with self._lock:
            key = model if model in self._faults else "*" if "*" in self._faults else None
            if key is None:
                return None
            spec = self._faults[key]
            if spec.probability < 1.0 and self._rng.random() >= spec.probability:
                return None
            left = self._remaining.get(key)
            if left is not None:
                if left <= 1:
                    self._faults.pop(key, None)
                    self._remaining.pop(key, None)
                else:
                    self._remaining[key] = left - 1
            return spec
