"""A tiny random Llama built in the test process: hidden size 64, 2 layers, a byte-level BPE
tokenizer trained on the spot, a ChatML chat template. Saved as a plain HF folder, so that it goes
through the same loading code as the real model."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "the router picks a model for each request and streams tokens back to the client",
    "write a python function that reverses a list and explain its complexity",
    "what is the capital of france? paris is the capital of france.",
    "a poem about the sea at night, with waves and stars and a quiet moon",
    "numbers 0 1 2 3 4 5 6 7 8 9 and punctuation . , ; : ! ? ( ) [ ]",
] * 20


def build_tiny_llama(target: Path, seed: int = 0, hidden_size: int = 64) -> Path:
    """``hidden_size`` / 4 heads is the head size (16 by default; vLLM's Triton attention needs 32+)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    target.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(str(target))
    config = LlamaConfig(
        vocab_size=len(hf),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=int(hf.convert_tokens_to_ids("<|im_end|>")),  # type: ignore[arg-type]
        bos_token_id=int(hf.convert_tokens_to_ids("<|endoftext|>")),  # type: ignore[arg-type]
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.save_pretrained(str(target))
    return target
