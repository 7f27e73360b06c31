"""The GPU engine of the self-hosted Llama: vLLM's async engine inside the provider replica.

Every vLLM import lives in this module, and this module is imported only when a provider is
configured with ``engine: vllm`` (``import vllm`` fails where it is not installed: the ``[gpu]``
extra brings it). ``ray.serve.llm`` builds its own OpenAI-compatible deployment; here the engine
sits behind the router's adapter interface instead, so that the Llama shares the router's
streaming contract, token accounting, error tree and fallback with the API providers, and the
same provider deployment class serves both engines.
"""

from __future__ import annotations

import inspect
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from deployments.providers.base import ChatMessage
from deployments.providers.llama_engine import Piece, Sampling


class VLLMEngine:
    def __init__(
        self,
        model_dir: Path,
        model_name: str,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        engine_args: Mapping[str, Any] | None = None,
    ) -> None:
        # The replica is a threaded Ray worker that may have touched CUDA already: forking the
        # engine core from it fails ("Cannot re-initialize CUDA in forked subprocess").
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        started = time.monotonic()
        kwargs: dict[str, Any] = {
            "model": str(model_dir),
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len,
            "tensor_parallel_size": tensor_parallel_size,
            "disable_log_stats": True,
        }
        kwargs.update(engine_args or {})  # the config's engine_args win over the fields above
        args = AsyncEngineArgs(**kwargs)
        self._engine: Any = AsyncLLMEngine.from_engine_args(args)
        self._tokenizer: Any = None
        self.load_s = time.monotonic() - started
        self.model_name = model_name

    async def _prompt_ids(self, messages: list[ChatMessage]) -> list[int]:
        if self._tokenizer is None:
            tokenizer = self._engine.get_tokenizer()  # a coroutine in older vLLM, plain in 0.26
            self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        chat = [{"role": m.role, "content": m.content} for m in messages]
        ids = self._tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        # transformers 5 returns a BatchEncoding (a Mapping, not a dict); 4.x a list of ids
        return [int(i) for i in (ids["input_ids"] if isinstance(ids, Mapping) else ids)]

    async def stream(self, messages: list[ChatMessage], sampling: Sampling) -> AsyncIterator[Piece]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        ids = await self._prompt_ids(messages)
        params = SamplingParams(
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature or 0.0,
            top_p=sampling.top_p if sampling.top_p is not None else 1.0,
            stop=sampling.stop or None,
            seed=sampling.seed,  # None: vLLM draws afresh
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
        )
        sent = 0
        final: Any = None
        async for output in self._engine.generate(
            TokensPrompt(prompt_token_ids=ids), params, request_id=uuid.uuid4().hex
        ):
            completion = output.outputs[0]
            if len(completion.text) > sent:
                yield Piece(text=completion.text[sent:])
                sent = len(completion.text)
            final = completion
        finish = "length" if final is not None and final.finish_reason == "length" else "stop"
        yield Piece(
            finish_reason=finish,
            input_tokens=len(ids),
            output_tokens=len(final.token_ids) if final is not None else 0,
        )
