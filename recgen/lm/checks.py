"""Check model and adapter folders before a library reads them, so a broken file is a
:class:`~recgen.errors.ModelLoadError` that names it and says what to do, not a raw ``SafetensorError``,
``JSONDecodeError`` or ``ValueError`` from deep inside transformers, peft or vLLM.

Only safetensors weights are accepted: a ``.bin`` file is a pickle, and unpickling runs code.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open

from ..errors import ModelLoadError

#: What a loader raises for a broken file (after the checks below, these mean "the files do not fit").
LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError)

_MODEL_JSON = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "model.safetensors.index.json")
_PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")


def looks_like_path(name: str) -> bool:
    """A local path rather than a hub id (``org/name``): absolute, relative with a dot, or ``~``."""
    return name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or Path(name).expanduser().exists()


def read_json_object(file: Path, fix: str) -> dict:
    """The JSON object in ``file``; anything else is a ModelLoadError naming the file and ``fix``."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"{file} is not valid JSON ({exc}): {fix}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{file} holds a JSON {type(data).__name__}, not an object: {fix}")
    return data


def check_safetensors(file: Path, fix: str) -> None:
    """Read the header only (cheap): a truncated or garbage file fails here, before any weights load."""
    try:
        with safe_open(str(file), framework="numpy"):
            pass
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"{file} is not a readable safetensors file ({exc}): {fix}") from None


def check_model_folder(name: str) -> None:
    """For a local ``lm.model``: a folder with ``config.json`` and safetensors weights whose JSON and
    safetensors headers read. Hub ids are left to the loader."""
    if not looks_like_path(name):
        return
    folder = Path(name).expanduser()
    fix = ("point lm.model at a Hugging Face causal-LM folder (config.json, model.safetensors, tokenizer files) "
           "or a hub id, or re-save the model with save_pretrained(..., safe_serialization=True)")
    if not folder.exists():
        raise ModelLoadError(f"language model folder {folder} does not exist: {fix}")
    if not folder.is_dir():
        raise ModelLoadError(f"language model {folder} is a file, not a model folder: {fix}")
    weights = sorted(folder.glob("*.safetensors"))
    pickles = [p for p in _PICKLES if (folder / p).exists()]
    found = f"; its {', '.join(pickles)} is a pickle, which recgen never loads" if pickles else ""
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} is not a model folder (no config.json{found}): {fix}")
    if not weights:
        raise ModelLoadError(f"{folder} has no *.safetensors weights{found}: {fix}")
    for name_ in _MODEL_JSON:
        if (folder / name_).is_file():
            read_json_object(folder / name_, fix)
    for file in weights:
        check_safetensors(file, fix)


def check_adapter_folder(adapter: str | Path) -> dict:
    """A peft adapter folder: ``adapter_config.json`` (a peft config object) and a readable
    ``adapter_model.safetensors``; ``adapter_model.bin`` alone is refused. Returns the config."""
    folder = Path(adapter).expanduser()
    fix = "point lm.adapter at a folder written by `recgen finetune` or peft's save_pretrained, or retrain it"
    if not folder.is_dir():
        raise ModelLoadError(f"adapter folder {adapter} does not exist or is not a folder: {fix}")
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"adapter folder {adapter} has no adapter_config.json: {fix}")
    config = read_json_object(config_file, fix)
    if not isinstance(config.get("peft_type"), str):
        raise ModelLoadError(f"{config_file} has no peft_type, so it is not a peft adapter config: {fix}")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        pickle = " (adapter_model.bin is a pickle and is never loaded)" if (folder / "adapter_model.bin").exists() else ""
        raise ModelLoadError(f"adapter folder {adapter} has no adapter_model.safetensors{pickle}: only safetensors "
                             f"is loaded; re-save with save_pretrained(..., safe_serialization=True) or retrain")
    check_safetensors(weights, fix)
    return config
