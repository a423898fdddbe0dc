"""Which LM (and adapter) a fitted stage was made with, and whether this machine has that very LM.

A served LM stage learned weights for one LM's scores: another model, or the same name with other weights,
would feed it numbers it was not fitted on. So the stage stores the model as configured, the resolved folder's
digest (its config and weight files) and the adapter folder's digest; loading checks them before anything is
served, and a missing or different LM is a :class:`ModelLoadError` naming it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import remembered_digest
from ..errors import ModelLoadError
from .resolve import resolve_lm

#: The files of a model or adapter folder whose bytes make its identity (tokenizers change labels' token ids).
_IDENTITY_FILES = ("config.json", "tokenizer.json", "adapter_config.json")


@dataclass(frozen=True)
class LMIdentity:
    """``model``: as configured (None = the default LM); ``model_digest``: of the resolved folder (None when the
    model is not a local folder, e.g. a vLLM server URL: then only the name is checked); ``adapter``: a LoRA
    adapter folder or None, ``adapter_digest`` its digest."""

    model: str | None
    model_digest: str | None
    adapter: str | None = None
    adapter_digest: str | None = None

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> "LMIdentity":
        return cls(raw.get("model"), raw.get("model_digest"), raw.get("adapter"), raw.get("adapter_digest"))

    def describe(self) -> str:
        return f"LM {self.model or 'default (SmolLM2-135M-Instruct)'}" + (f" with adapter {self.adapter}"
                                                                         if self.adapter else "")


def folder_digest(folder: Path) -> str:
    """SHA-256 over a model or adapter folder's identity files and every ``*.safetensors`` file (name + bytes);
    each file's own digest is read once per version of the file (:func:`..atomic.remembered_digest`)."""
    digest = hashlib.sha256()
    files = sorted({*(folder / n for n in _IDENTITY_FILES if (folder / n).is_file()), *folder.glob("*.safetensors")})
    if not files:
        raise ModelLoadError(f"{folder} holds no model files (config.json, *.safetensors)")
    for path in files:
        digest.update(path.name.encode() + b"\0" + remembered_digest(path).encode())
    return digest.hexdigest()[:16]


def local_name(name: str | None) -> str | None:
    """A model or adapter name as stored: a local folder as its absolute path (a relative one would name another
    folder from another working directory), anything else (a hub id, a URL, None) as given."""
    if name and Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    return name


def identify(model: str | None, adapter: str | None) -> LMIdentity:
    """The identity of the LM ``model`` (+ ``adapter`` folder) as this machine has it."""
    model, adapter = local_name(model), local_name(adapter)
    resolved = Path(resolve_lm(model))
    model_digest = folder_digest(resolved) if resolved.is_dir() else None
    adapter_digest = None
    if adapter:
        if not Path(adapter).is_dir():
            raise ModelLoadError(f"the LM adapter folder {adapter} does not exist")
        adapter_digest = folder_digest(Path(adapter))
    return LMIdentity(model, model_digest, adapter, adapter_digest)


def check_available(wanted: LMIdentity, what: str) -> None:
    """Refuse (ModelLoadError naming the LM) when this machine lacks ``wanted`` or has other weights under its name."""
    missing = [path for path, digest in ((wanted.model, wanted.model_digest), (wanted.adapter, wanted.adapter_digest))
               if path and digest is not None and not Path(path).is_dir()]  # was a local folder at fit time
    try:
        if missing:
            raise ModelLoadError(f"{missing[0]} does not exist")
        found = identify(wanted.model, wanted.adapter)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{what} needs the {wanted.describe()}, which is not available here ({exc}); restore "
                             "it, or refit without the LM stage (`recgen fit` without --lm-stage)") from None
    for name, have, want in (("model", found.model_digest, wanted.model_digest),
                             ("adapter", found.adapter_digest, wanted.adapter_digest)):
        if want is not None and have != want:
            raise ModelLoadError(f"{what} was fitted with the {wanted.describe()} ({name} digest {want}); the one "
                                 f"here differs ({name} digest {have}): its scores would not be the ones the stage "
                                 "was fitted on. Restore that LM or refit with `recgen fit --lm-stage …`")
