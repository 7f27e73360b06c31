"""The self-hosted Llama on the CPU engine, with a tiny random Llama built in the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments.providers.base import ChatMessage, ProviderRequest, StreamDelta
from deployments.providers.llama_engine import (
    LocalLlamaAdapter,
    Sampling,
    StopMatcher,
    TransformersEngine,
    _penalised,
    build_local_adapter,
)
from deployments.providers.llama_models import resolve_model_dir
from serve_app.config import LocalLlamaConfig
from serve_app.errors import ProviderBadRequestError
from tests.tiny_llama import build_tiny_llama


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def adapter(tiny_dir: Path) -> Iterator[LocalLlamaAdapter]:
    built = build_local_adapter("meta", LocalLlamaConfig(model=str(tiny_dir), throughput_tokens_per_s=10))
    yield built


def _req(text: str = "what is the capital of france?", **kw: Any) -> ProviderRequest:
    return ProviderRequest(
        model="meta-llama/Llama-3.1-8B-Instruct",
        messages=[ChatMessage("system", "be brief"), ChatMessage("user", text)],
        **kw,
    )


def test_loads_through_the_model_folder_code(tiny_dir: Path, adapter: LocalLlamaAdapter) -> None:
    assert resolve_model_dir(str(tiny_dir)) == tiny_dir
    engine = adapter.engine
    assert isinstance(engine, TransformersEngine)
    assert engine.model.config.hidden_size == 64 and engine.model.config.num_hidden_layers == 2


def test_chat_template_is_applied(adapter: LocalLlamaAdapter) -> None:
    engine = adapter.engine
    assert isinstance(engine, TransformersEngine)
    ids = engine.prompt_ids([ChatMessage("user", "hello")])
    text = engine.tokenizer.decode(ids)
    assert text == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"


async def test_stream_and_complete_agree_and_report_usage(adapter: LocalLlamaAdapter) -> None:
    engine = adapter.engine
    assert isinstance(engine, TransformersEngine)
    deltas: list[StreamDelta] = [d async for d in adapter.stream(_req(max_tokens=12))]
    text = "".join(d.text for d in deltas)
    final = deltas[-1]
    assert final.finish_reason in ("stop", "length") and final.usage is not None
    assert final.usage.input_tokens == len(engine.prompt_ids(_req().messages))
    assert 0 < final.usage.output_tokens <= 12 or final.finish_reason == "stop"
    done = await adapter.complete(_req(max_tokens=12))  # greedy: deterministic
    assert done.text == text and done.usage == final.usage and done.provider_model == engine.model_name


async def test_max_tokens_is_honoured(adapter: LocalLlamaAdapter) -> None:
    for n in (1, 5):
        done = await adapter.complete(_req(max_tokens=n))
        assert done.usage.output_tokens <= n
        if done.usage.output_tokens == n:
            assert done.finish_reason == "length"


async def test_temperature_samples_afresh_and_a_seed_repeats(adapter: LocalLlamaAdapter) -> None:
    greedy = [await adapter.complete(_req(max_tokens=20)) for _ in range(2)]
    assert greedy[0].text == greedy[1].text  # no temperature: greedy
    hot = [await adapter.complete(_req(max_tokens=20, temperature=1.5)) for _ in range(2)]
    # 400-token vocabulary, random weights: two free draws of 20 tokens differ, and differ from greedy
    assert hot[0].text != hot[1].text and greedy[0].text not in (hot[0].text, hot[1].text)
    seeded = [await adapter.complete(_req(max_tokens=20, temperature=1.5, seed=7)) for _ in range(2)]
    assert seeded[0].text == seeded[1].text
    assert (await adapter.complete(_req(max_tokens=20, temperature=1.5, seed=8))).text != seeded[0].text


async def test_stop_sequence_cuts_the_answer(adapter: LocalLlamaAdapter) -> None:
    full = await adapter.complete(_req(max_tokens=30, temperature=1.5, seed=3))
    assert len(full.text) > 6
    stop = full.text[3:5]
    cut = await adapter.complete(_req(max_tokens=30, temperature=1.5, seed=3, stop=[stop]))
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.finish_reason == "stop"


async def test_prompt_over_context_window_is_a_bad_request(adapter: LocalLlamaAdapter) -> None:
    with pytest.raises(ProviderBadRequestError):
        await adapter.complete(_req("word " * 2000, max_tokens=5))


def test_stop_matcher_holds_back_prefixes() -> None:
    m = StopMatcher(["END"])
    assert m.feed("hello E") == ("hello ", False)
    assert m.feed("hello EN") == ("", False)
    assert m.feed("hello ENX") == ("ENX", False)
    assert m.feed("hello ENX END more") == (" ", True)
    plain = StopMatcher([])
    assert plain.feed("ab\ufffd") == ("ab", False)
    assert plain.feed("abc") == ("c", False)


def test_vllm_engine_is_imported_only_when_configured() -> None:
    import sys

    assert "vllm" not in sys.modules
    assert "deployments.providers.llama_vllm" not in sys.modules


def test_penalties_lower_the_logits_of_tokens_already_generated() -> None:
    import torch

    sampling = Sampling(
        max_tokens=1, temperature=None, top_p=None, stop=[], presence_penalty=0.5, frequency_penalty=0.25
    )
    logits = torch.zeros(5)
    assert _penalised(logits, [1, 1, 3], sampling).tolist() == [0.0, -1.0, 0.0, -0.75, 0.0]
    assert _penalised(logits, [], sampling) is logits
    none = Sampling(max_tokens=1, temperature=None, top_p=None, stop=[])
    assert _penalised(logits, [1, 1, 3], none) is logits


async def test_penalties_steer_the_answer_away_from_repeats(adapter: LocalLlamaAdapter) -> None:
    engine = adapter.engine
    assert isinstance(engine, TransformersEngine)

    def distinct(text: str) -> int:
        return len(set(engine.tokenizer.encode(text, add_special_tokens=False)))

    plain = await adapter.complete(_req(max_tokens=20))
    penalised = await adapter.complete(_req(max_tokens=20, presence_penalty=2.0, frequency_penalty=2.0))
    assert plain.usage.output_tokens == 20 and distinct(plain.text) < 20  # greedy on random weights repeats
    assert distinct(penalised.text) > distinct(plain.text)
    negative = await adapter.complete(_req(max_tokens=20, presence_penalty=-2.0))
    assert distinct(negative.text) <= distinct(plain.text)
