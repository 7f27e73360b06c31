"""Text, token counts and timing of emulated answers.

Tokens are counted with one rule on both sides (prompt and answer): a word, a number or a single
punctuation mark is one token. It is not any vendor's BPE, but usage reported for the answer is
exactly the number of tokens the emulator emitted, and the prompt count is the same rule applied
to the text it received.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from serve_app.emulator.tools import EmuToolCall, ToolRequest, json_answer, pieces, plan_calls

IMAGE_TOKENS = 85  # what an image adds to the prompt (OpenAI's price for a low-detail image)
_TOKEN = re.compile(r"\w+|[^\w\s]")

_VOCAB = (
    "the router picks a model for each request based on task type and complexity while keeping "
    "cost low and latency small so that every answer arrives quickly with the quality it needs "
    "providers fail sometimes and the gateway moves to the next candidate without dropping work "
    "streams carry tokens one by one and budgets settle after each call"
).split()


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


class LatencyProfile(BaseModel):
    """How fast one emulated model answers."""

    model_config = ConfigDict(extra="forbid")

    ttft_ms: float = Field(default=300.0, ge=0, description="time to first token")
    tokens_per_s: float = Field(default=80.0, gt=0, description="decode speed after the first token")
    reply_tokens: int = Field(default=40, ge=1, description="answer length when max_tokens does not cut it")
    reasoning_tokens: int = Field(
        default=0, ge=0, description="hidden thinking tokens per answer: billed as output, never sent"
    )


# Rough public figures for each family (time to first token, decode speed); the run mode uses them
# so that the offline router feels like the real thing. Tests scale them down.
DEFAULT_PROFILES: dict[str, LatencyProfile] = {
    "claude-opus-4-5": LatencyProfile(ttft_ms=900, tokens_per_s=45),
    "claude-sonnet-4-5": LatencyProfile(ttft_ms=600, tokens_per_s=70),
    "claude-haiku-4-5": LatencyProfile(ttft_ms=350, tokens_per_s=140),
    "gpt-4.1": LatencyProfile(ttft_ms=500, tokens_per_s=80),
    "gpt-4o-mini": LatencyProfile(ttft_ms=300, tokens_per_s=120),
    "gemini-2.5-pro": LatencyProfile(ttft_ms=800, tokens_per_s=90),
    "meta-llama/Llama-3.3-70B-Instruct": LatencyProfile(ttft_ms=250, tokens_per_s=60),
    "meta-llama/Llama-3.1-8B-Instruct": LatencyProfile(ttft_ms=120, tokens_per_s=150),
}
FALLBACK_PROFILE = LatencyProfile()


@dataclass
class Answer:
    tokens: list[str]  # each already carries its leading space
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    stop_sequence: str | None = None  # the stop sequence that ended the answer, if one did
    reasoning_tokens: int = 0  # thinking tokens spent before the answer (billed as output)
    cache_read_tokens: int = 0  # prompt tokens served from the prompt cache (part of prompt_tokens)
    cache_write_tokens: int = 0  # prompt tokens written to the cache (Anthropic's explicit caching)
    tool_calls: list[EmuToolCall] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens) + sum(count_tokens(c.arguments_json) for c in self.tool_calls)

    def use_tools(self, req: ToolRequest, model: str, prompt_text: str) -> None:
        """Turn the answer into tool calls or a JSON document when the request asks for them; bill
        the request's images as prompt tokens."""
        self.prompt_tokens += IMAGE_TOKENS * req.images
        calls = plan_calls(req, model, prompt_text)
        if calls:
            self.tokens, self.tool_calls, self.finish_reason = [], calls, "tool_calls"
            return
        document = json_answer(req)
        if document is not None:
            self.tokens, self.finish_reason, self.stop_sequence = pieces(document), "stop", None


def compose_answer(
    model: str,
    prompt_text: str,
    *,
    profile: LatencyProfile,
    max_tokens: int | None,
    stop: list[str] | None,
) -> Answer:
    """A deterministic answer for (model, prompt), honouring max_tokens and stop sequences."""
    seed = int.from_bytes(
        hashlib.blake2b(f"{model}\x00{prompt_text}".encode(), digest_size=8).digest(), "big"
    )
    rng = random.Random(seed)
    want = profile.reply_tokens
    finish = "stop"
    if max_tokens is not None and max_tokens < want:
        want, finish = max_tokens, "length"
    words = [f"[{model}]"] + [rng.choice(_VOCAB) for _ in range(max(0, want - 1))]
    tokens = [w if i == 0 else " " + w for i, w in enumerate(words)][:want]
    matched: str | None = None
    if stop:
        text = ""
        for i, tok in enumerate(tokens):
            candidate = text + tok
            hits = [(candidate.find(s), s) for s in stop if s and s in candidate]
            if hits:
                at, matched = min(hits)
                kept = candidate[:at]
                # keep the whole tokens before the stop sequence and the part of this one before it
                tokens = tokens[:i] + ([kept[len(text) :]] if len(kept) > len(text) else [])
                finish = "stop"
                break
            text = candidate
    return Answer(
        tokens=tokens,
        finish_reason=finish,
        prompt_tokens=count_tokens(prompt_text),
        stop_sequence=matched,
        reasoning_tokens=profile.reasoning_tokens,
    )


class PromptCache:
    """Which prompt prefixes the emulated providers have cached, as their real caches behave:

    - implicit (OpenAI, Gemini): a prefix of at least ``min_tokens`` that was sent before is read
      from the cache (``cached_tokens`` / ``cachedContentTokenCount``);
    - explicit (Anthropic): the prefix up to the last block marked ``cache_control`` is written on
      first use (``cache_creation_input_tokens``) and read afterwards (``cache_read_input_tokens``).
    """

    def __init__(self, min_tokens: int = 1024, capacity: int = 4096) -> None:
        self.min_tokens = min_tokens
        self.capacity = capacity
        self._seen: dict[bytes, None] = {}  # insertion-ordered: the oldest is evicted first

    def _key(self, model: str, prefix: str) -> bytes:
        return hashlib.blake2b(f"{model}\x00{prefix}".encode(), digest_size=16).digest()

    def lookup(self, model: str, prefix: str | None) -> tuple[bool, int]:
        """(hit, the prefix's tokens), remembering the prefix; (False, 0) when it cannot be cached."""
        if not prefix:
            return False, 0
        tokens = count_tokens(prefix)
        if tokens < self.min_tokens:
            return False, 0
        key = self._key(model, prefix)
        if key in self._seen:
            return True, tokens
        self._seen[key] = None
        if len(self._seen) > self.capacity:
            del self._seen[next(iter(self._seen))]
        return False, tokens

    def apply(self, answer: Answer, model: str, prefix: str | None, explicit: bool) -> None:
        hit, tokens = self.lookup(model, prefix)
        tokens = min(tokens, answer.prompt_tokens)
        if hit:
            answer.cache_read_tokens = tokens
        elif explicit:
            answer.cache_write_tokens = tokens


class Pacer:
    """Sleeps so that token i is released at ttft + i / tokens_per_s after the request started."""

    def __init__(self, profile: LatencyProfile, scale: float) -> None:
        self._start = time.monotonic()
        self._ttft = profile.ttft_ms / 1000.0 * scale
        self._per_token = (1.0 / profile.tokens_per_s) * scale

    async def until_token(self, index: int) -> None:
        due = self._start + self._ttft + index * self._per_token
        delay = due - time.monotonic()
        if delay > 0.0005:
            await asyncio.sleep(delay)

    async def until_done(self, n_tokens: int) -> None:
        await self.until_token(max(0, n_tokens - 1))


async def paced(answer: Answer, pacer: Pacer) -> AsyncIterator[tuple[int, str]]:
    for i, tok in enumerate(answer.tokens):
        await pacer.until_token(i)
        yield i, tok
