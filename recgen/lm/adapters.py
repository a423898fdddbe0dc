"""Named LoRA adapters: which ones a backend serves, checks at load, and which one a request uses.

One engine can serve several adapters (one per dataset, tenant or task). Both backends take the same
``LMSettings`` (``adapter`` = the default, ``adapters`` = name → folder) and refuse the same bad adapters at
load, so behaviour does not depend on the backend:

* a rank above ``max_lora_rank``;
* ``modules_to_save`` (full ``lm_head``/``embed_tokens`` copies: vLLM rejects them, recgen never trains them);
* weights shaped for another base model (layer count or hidden size differ from the model's ``config.json``).

A prompt picks an adapter by name (``ChatPrompt.adapter``, set by the stage that builds it from the request,
so concurrent requests never see each other's choice); an unknown name is an :class:`UnknownAdapterError`
listing the served names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from safetensors import safe_open

from ..config import BASE_ADAPTER_NAME, LMSettings
from ..errors import InvalidRequestError, ModelLoadError
from .checks import check_adapter_folder, check_model_folder, looks_like_path
from .prompt import ChatPrompt

#: The name under which a bare ``lm.adapter`` folder is served (``adapter`` that is not a key of ``adapters``).
DEFAULT_ADAPTER_NAME = "default"
#: The name that selects the base model without any adapter (reserved: refused as an adapter's name).
BASE = BASE_ADAPTER_NAME


class UnknownAdapterError(InvalidRequestError):
    """A request named an adapter this backend does not serve (the server answers 404)."""


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: str
    rank: int
    base_model: str | None


@dataclass(frozen=True)
class AdapterSet:
    """The adapters one backend serves and the one used when a request names none (None = base model)."""

    adapters: dict[str, AdapterInfo]
    default: str | None

    @property
    def names(self) -> list[str]:
        return list(self.adapters)

    @property
    def max_rank(self) -> int:
        return max((a.rank for a in self.adapters.values()), default=0)

    def pick(self, name: str | None) -> str | None:
        """The adapter name to use for a request naming ``name`` (None → the default; ``base`` → no adapter)."""
        if name is None:
            return self.default
        refusal = unserved_adapter(name, self.adapters)
        if refusal:
            raise UnknownAdapterError(refusal)
        return None if name == BASE else name


def unserved_adapter(name: str | None, served: Iterable[str]) -> str | None:
    """Why a request naming adapter ``name`` is refused, or None when it is served (none named, the base model, or
    one of ``served``). The one predicate behind the backend's error, the server's 404 and a batch line's error,
    so all three refuse the same bodies with the same words."""
    served = list(served)
    if name is None or name == BASE or name in served:
        return None
    return f"adapter {name!r} is not served here; use one of: {', '.join([BASE, *served])}"


def named_adapters(settings: LMSettings) -> dict[str, str]:
    """name → folder: ``adapters`` plus a bare ``adapter`` folder under :data:`DEFAULT_ADAPTER_NAME`."""
    out = dict(settings.adapters)
    if settings.adapter and settings.adapter not in out:
        out[DEFAULT_ADAPTER_NAME] = settings.adapter
    return out


def default_adapter(settings: LMSettings) -> str | None:
    if not settings.adapter:
        return None
    return settings.adapter if settings.adapter in settings.adapters else DEFAULT_ADAPTER_NAME


def load_adapter_set(settings: LMSettings, model_path: str) -> AdapterSet:
    """Check every adapter against the base model and ``max_lora_rank``; the first bad one is a ModelLoadError."""
    infos = {name: check_adapter(name, path, model_path, settings.max_lora_rank)
             for name, path in named_adapters(settings).items()}
    return AdapterSet(infos, default_adapter(settings))


def check_named(settings: LMSettings) -> None:
    """What the user named, checked up front even by a command that never loads the LM (a typo in ``--lm`` or
    ``--adapter`` must not be silently ignored): a local ``lm.model`` folder (hub ids are left to the loader, but
    must look like one; server URLs too) and every adapter folder. A ModelLoadError naming it, else nothing."""
    model = settings.model
    if model and not model.startswith(("http://", "https://")):
        if looks_like_path(model):
            check_model_folder(model)
        elif not _HUB_ID.fullmatch(model):
            raise ModelLoadError(f"language model {model!r} is neither a local folder nor a Hugging Face hub id "
                                 "(name or org/name): pass a model folder or a hub id with --lm (or lm.model)")
    for name, path in named_adapters(settings).items():
        check_adapter(name, path, None, settings.max_lora_rank)


_HUB_ID = re.compile(r"[\w.-]{1,96}(/[\w.-]{1,96})?")


def check_adapter(name: str, path: str, model_path: str | None, max_rank: int | None) -> AdapterInfo:
    """One adapter folder, refused with the reason if no backend should load it (see the module doc)."""
    config = check_adapter_folder(path)
    where = f"adapter {name!r} ({path})"
    if config.get("modules_to_save"):
        raise ModelLoadError(
            f"{where} saves whole modules ({', '.join(map(str, config['modules_to_save']))}); LoRA serving (vLLM) "
            "rejects modules_to_save: retrain without it, or merge it into the model (merge_and_unload) and pass --lm"
        )
    try:
        rank = int(config.get("r", 8))
    except (TypeError, ValueError):
        raise ModelLoadError(f"{Path(path) / 'adapter_config.json'}: r must be a whole number, not "
                             f"{config.get('r')!r}; retrain the adapter or fix the file") from None
    if max_rank is not None and rank > max_rank:
        raise ModelLoadError(f"{where} has LoRA rank {rank}, above lm.max_lora_rank={max_rank}: raise "
                             "lm.max_lora_rank or retrain the adapter with a smaller r")
    base = config.get("base_model_name_or_path")
    if model_path:
        check_base_model(where, Path(path), model_path, base)
    return AdapterInfo(name, str(Path(path).expanduser().resolve()), rank, base)


_LAYER = re.compile(r"\.layers\.(\d+)\.")


def check_base_model(where: str, folder: Path, model_path: str, base: str | None) -> None:
    """The adapter's tensor shapes must fit the model: layer indices below its layer count, and each
    ``lora_A`` reading a width the model has (hidden or MLP size). Names alone are not compared: an adapter
    trained on a converted copy of the same model names another path."""
    config_file = Path(model_path).expanduser() / "config.json"
    if not looks_like_path(model_path) or not config_file.is_file():
        return  # a hub id: the loader checks shapes
    try:
        model = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # check_model_folder reports a broken config.json
    layers, hidden = model.get("num_hidden_layers"), model.get("hidden_size")
    widths = {w for w in (hidden, model.get("intermediate_size")) if isinstance(w, int)}
    with safe_open(str(folder / "adapter_model.safetensors"), framework="numpy") as weights:
        for key in weights.keys():
            layer = _LAYER.search(key)
            wrong = None
            if layer and isinstance(layers, int) and int(layer.group(1)) >= layers:
                wrong = f"it has layer {layer.group(1)} but the model has {layers} layers"
            elif "lora_A" in key and widths:
                shape = weights.get_slice(key).get_shape()
                if len(shape) == 2 and shape[1] not in widths:
                    wrong = f"{key} reads width {shape[1]} but the model's widths are {sorted(widths)}"
            if wrong:
                trained = f" (trained on {base})" if base else ""
                raise ModelLoadError(f"{where} was made for another base model{trained}: {wrong}; use it with "
                                     f"the model it was trained on, or retrain it on {model_path}")


def group_by_adapter(prompts: list[ChatPrompt], adapters: AdapterSet) -> dict[str | None, list[int]]:
    """Prompt positions per resolved adapter name (None = base), in first-seen order."""
    groups: dict[str | None, list[int]] = {}
    for n, prompt in enumerate(prompts):
        groups.setdefault(adapters.pick(prompt.adapter), []).append(n)
    return groups


def check_adapter_name(backend, name: str) -> None:
    """Refuse a request naming an adapter ``backend`` does not serve, before any work (backends without an
    :class:`AdapterSet`, e.g. a vLLM server, check when the request is sent)."""
    adapters = getattr(backend, "adapters", None)
    if isinstance(adapters, AdapterSet):
        adapters.pick(name)

