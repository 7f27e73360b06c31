"""The self-hosted Llama behind the adapter interface: one engine protocol, two engines.

``TransformersEngine`` (this module) runs on CPU; ``deployments.providers.llama_vllm.VLLMEngine``
runs on GPU and is imported only when configured. ``LocalLlamaAdapter`` turns either into the
``ProviderAdapter`` contract (complete / stream, usage, finish reasons, our error tree).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from deployments.providers.base import ChatMessage, Completion, ProviderRequest, StreamDelta, Usage
from serve_app.errors import ProviderBadRequestError, ProviderServerError

DEFAULT_MAX_TOKENS = 256


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float | None
    top_p: float | None
    stop: list[str]
    seed: int | None = None  # sampling with a seed repeats; without one it draws afresh
    presence_penalty: float = 0.0  # OpenAI's: subtracted from the logit of every token already generated
    frequency_penalty: float = 0.0  # ... times the number of times it was generated


@dataclass
class Piece:
    """One step of a local generation: new text, and at the end the finish reason and token counts."""

    text: str = ""
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0


class Engine(Protocol):
    model_name: str

    def stream(self, messages: list[ChatMessage], sampling: Sampling) -> AsyncIterator[Piece]: ...


class StopMatcher:
    """Holds back text that could be the start of a stop sequence; cuts at the first full match."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.text = ""
        self.sent = 0

    def feed(self, full_text: str) -> tuple[str, bool]:
        """New text safe to send, and whether a stop sequence ended the answer."""
        self.text = full_text
        cut = min((full_text.find(s) for s in self.stops if s in full_text), default=-1)
        if cut >= 0:
            out = full_text[self.sent : cut]
            self.sent = cut
            return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(full_text)), 0, -1):
                if full_text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        if full_text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            hold = max(hold, 1)
        safe = len(full_text) - hold
        out = full_text[self.sent : safe] if safe > self.sent else ""
        self.sent = max(self.sent, safe)
        return out, False

    def flush(self) -> str:
        out = self.text[self.sent :].replace("\ufffd", "")
        self.sent = len(self.text)
        return out


class TransformersEngine:
    """CPU generation with transformers: chat template, KV cache, token-by-token streaming."""

    def __init__(self, model_dir: Path, model_name: str, threads: int = 1) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        started = time.monotonic()
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir))
        self.model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        self.load_s = time.monotonic() - started
        self.model_name = model_name
        self.context_window = int(getattr(self.model.config, "max_position_embeddings", 2048))
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}

    def prompt_ids(self, messages: list[ChatMessage]) -> list[int]:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        encoded = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])

    def generate(
        self, messages: list[ChatMessage], sampling: Sampling, cancel: threading.Event
    ) -> Iterator[Piece]:
        """Synchronous generation; run it in a thread."""
        import torch

        ids = self.prompt_ids(messages)
        budget = self.context_window - len(ids)
        if budget <= 0:
            raise ProviderBadRequestError(
                f"prompt of {len(ids)} tokens exceeds the context window of {self.context_window}",
                provider="meta",
                model=self.model_name,
                status_code=400,
            )
        limit = min(sampling.max_tokens, budget)
        generator = torch.Generator().manual_seed(
            sampling.seed if sampling.seed is not None else secrets.randbits(63)
        )
        matcher = StopMatcher(sampling.stop)
        generated: list[int] = []
        finish = "length"
        stopped_by_sequence = False
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([ids]), use_cache=True)
            while len(generated) < limit and not cancel.is_set():
                token = _sample(_penalised(out.logits[0, -1], generated, sampling), sampling, generator)
                if token in self.eos_ids:
                    finish = "stop"
                    break
                generated.append(token)
                text, stopped_by_sequence = matcher.feed(
                    self.tokenizer.decode(generated, skip_special_tokens=True)
                )
                if text:
                    yield Piece(text=text)
                if stopped_by_sequence:
                    finish = "stop"
                    break
                out = self.model(input_ids=torch.tensor([[token]]), cache=out.cache, use_cache=True)
        rest = "" if stopped_by_sequence else matcher.flush()
        yield Piece(text=rest, finish_reason=finish, input_tokens=len(ids), output_tokens=len(generated))

    async def stream(self, messages: list[ChatMessage], sampling: Sampling) -> AsyncIterator[Piece]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Piece | BaseException | None] = asyncio.Queue()
        cancel = threading.Event()

        def run() -> None:
            try:
                for piece in self.generate(messages, sampling, cancel):
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
            except BaseException as exc:  # handed to the consumer, which raises it
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        thread = threading.Thread(target=run, name="llama-generate", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()


def _penalised(logits: Any, generated: list[int], sampling: Sampling) -> Any:
    """OpenAI's presence and frequency penalties on the logits of the tokens generated so far."""
    if not generated or not (sampling.presence_penalty or sampling.frequency_penalty):
        return logits
    import torch

    counts = torch.bincount(torch.tensor(generated), minlength=logits.shape[-1])[: logits.shape[-1]]
    counts = counts.to(logits.dtype)
    return (
        logits
        - counts * sampling.frequency_penalty
        - (counts > 0).to(logits.dtype) * sampling.presence_penalty
    )


def _sample(logits: Any, sampling: Sampling, generator: Any) -> int:
    import torch

    if not sampling.temperature:  # None or 0: greedy, deterministic
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p is not None and sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < sampling.top_p
        filtered = torch.zeros_like(probs)
        filtered[order[keep]] = sorted_probs[keep]
        probs = filtered / filtered.sum()
    return int(torch.multinomial(probs, 1, generator=generator).item())


class LocalLlamaAdapter:
    """The ``ProviderAdapter`` of the self-hosted Llama, over either engine."""

    def __init__(self, provider: str, engine: Engine) -> None:
        self.provider = provider
        self.engine = engine

    def _sampling(self, request: ProviderRequest) -> Sampling:
        return Sampling(
            max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=list(request.stop or []),
            seed=request.seed,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        try:
            async for piece in self.engine.stream(request.messages, self._sampling(request)):
                if piece.finish_reason is None:
                    if piece.text:
                        yield StreamDelta(text=piece.text)
                    continue
                usage = Usage(input_tokens=piece.input_tokens, output_tokens=piece.output_tokens)
                if piece.text:
                    yield StreamDelta(text=piece.text)
                yield StreamDelta(
                    finish_reason="length" if piece.finish_reason == "length" else "stop", usage=usage
                )
        except (ProviderBadRequestError, ProviderServerError):
            raise
        except Exception as exc:
            raise ProviderServerError(
                f"local engine failed: {type(exc).__name__}: {exc}",
                provider=self.provider,
                model=request.model,
                status_code=500,
            ) from exc

    async def complete(self, request: ProviderRequest) -> Completion:
        parts: list[str] = []
        finish: Any = "stop"
        usage = Usage()
        async for delta in self.stream(request):
            parts.append(delta.text)
            if delta.finish_reason is not None:
                finish = delta.finish_reason
            if delta.usage is not None:
                usage = delta.usage
        return Completion(
            text="".join(parts), finish_reason=finish, usage=usage, provider_model=self.engine.model_name
        )

    async def aclose(self) -> None:
        return None


def build_local_adapter(provider: str, cfg: Any) -> LocalLlamaAdapter:
    """The adapter for a ``local_llama`` provider (cfg: ``serve_app.config.LocalLlamaConfig``)."""
    from deployments.providers.llama_models import display_name, resolve_model_dir

    model_dir = resolve_model_dir(cfg.model)
    engine: Engine
    if cfg.engine == "vllm":
        from deployments.providers.llama_vllm import VLLMEngine  # imported only when configured

        engine = VLLMEngine(
            model_dir,
            display_name(cfg.model),
            cfg.gpu_memory_utilization,
            cfg.max_model_len,
            cfg.tensor_parallel_size,
            cfg.engine_args,
        )
    else:
        engine = TransformersEngine(model_dir, display_name(cfg.model), threads=cfg.threads)
    return LocalLlamaAdapter(provider, engine)
