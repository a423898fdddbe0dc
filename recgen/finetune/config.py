"""Fine-tuning recipes (YAML), validated by pydantic: unknown keys and wrong types are listed, not ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import LMSettings, PromptSettings, RecgenConfig, RetrievalSettings, format_validation_error
from ..errors import ConfigError

#: LoRA may only wrap the attention / MLP linear layers (vLLM rejects embedding / lm_head weights).
ALLOWED_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: vLLM's default ``--max-lora-rank``.
MAX_VLLM_LORA_RANK = 16


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SFTDataConfig(_Strict):
    """How ranker SFT examples are made from training histories. ``retrieval`` and ``prompt`` are the very
    settings groups of :class:`~recgen.config.RecgenConfig`: the adapter records them and is served with them."""

    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    prompt: PromptSettings = Field(default_factory=PromptSettings)
    min_history: int = Field(3, ge=1, description="shortest prefix used as a history")
    prefixes_per_user: int = Field(2, ge=1, description="random prefixes of each user's train sequence")
    max_examples: int | None = Field(None, ge=1)
    supervise_end_of_turn: bool = Field(False, description="also train the end-of-turn token after the label")
    reasons_fraction: float = Field(0.0, ge=0, le=1, description="share of extra reason examples built from facts")
    collaborative_folds: int = Field(
        5, ge=2, description="SFT candidates for a user come from transitions fitted on the OTHER folds' users, so "
                             "the user's own next item is not in the transition counts (no leak into the candidates)")
    candidate_order: Literal["retrieval", "shuffled"] = Field(
        "retrieval", description="retrieval = candidates in the retriever's order, as at inference (the model can "
                                 "learn how far to trust it); shuffled = random order")
    unretrieved_target: Literal["skip", "inject"] = Field(
        "skip", description="a prefix whose target the retriever missed: skip it (the LM can only reorder what is "
                            "retrieved), or inject the target at a random position")


class LoraSettings(_Strict):
    r: int = Field(8, ge=1, le=MAX_VLLM_LORA_RANK)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    layers_to_transform: list[int] | None = Field(
        None, description="only these decoder layers get LoRA (e.g. the top ones: backward then stops there, "
                          "which makes a CPU step much cheaper); None = all layers")

    @field_validator("target_modules")
    @classmethod
    def _only_linear(cls, value: list[str]) -> list[str]:
        bad = [m for m in value if m not in ALLOWED_TARGET_MODULES]
        if bad:
            raise ValueError(f"{bad} not allowed; choose from {list(ALLOWED_TARGET_MODULES)} "
                             "(attention/MLP linear layers only, so vLLM can serve the adapter)")
        if not value:
            raise ValueError("at least one target module is needed")
        return value


class TrainSettings(_Strict):
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(2, ge=1)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(5, ge=0)
    max_steps: int = Field(100, ge=1, description="optimizer steps")
    max_train_minutes: float | None = Field(None, gt=0, description="stop (with a checkpoint) after this wall time")
    max_length: int = Field(1024, ge=16)
    gradient_checkpointing: bool = False
    checkpoint_every: int = Field(20, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    eval_every: int = Field(20, ge=1)
    eval_users: int = Field(300, ge=1, description="fixed validation user sample")
    eval_at_start: bool = Field(True, description="validate the zero-shot model at step 0 (a reference point)")
    eval_batch_size: int = Field(4, ge=1)
    early_stopping_patience: int | None = Field(3, ge=1, description="evaluations without improvement")
    threads: int | None = Field(None, ge=1)
    log_every: int = Field(1, ge=1)


class RankerFinetuneConfig(_Strict):
    kind: Literal["ranker"] = "ranker"
    name: str
    dataset: str
    lm: str | None = None
    output_dir: str = Field(..., description="adapter + checkpoints (outside git)")
    results_dir: str | None = Field(None, description="small committed results (model card, metrics, plot)")
    seed: int = 0
    data: SFTDataConfig = Field(default_factory=SFTDataConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)

    def serving_config(self) -> RecgenConfig:
        """The RecgenConfig the adapter is validated with during training and must be served with."""
        return RecgenConfig(retrieval=self.data.retrieval, prompt=self.data.prompt, lm=LMSettings(model=self.lm))


class RetrieverTrainSettings(_Strict):
    batch_size: int = Field(64, ge=2)
    epochs: int = Field(1, ge=1)
    lr: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    pairs_per_user: int = Field(20, ge=1)
    min_history: int = Field(2, ge=1)
    history_items: int = Field(5, ge=1, description="most recent items in the anchor text")
    max_pairs: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)
    eval_users: int | None = Field(None, ge=1, description="None = all users")
    collaborative_weights: list[float] = Field(
        default_factory=lambda: [0.0, 1.0],
        description="hybrid weights (cosine + w x item transitions) reported; 1.0 is what recgen serves by default")


class RetrieverFinetuneConfig(_Strict):
    kind: Literal["retriever"] = "retriever"
    name: str
    dataset: str
    output_dir: str
    results_dir: str | None = None
    seed: int = 0
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings,
                                         description="served retrieval settings; `embedder` is the base model")
    train: RetrieverTrainSettings = Field(default_factory=RetrieverTrainSettings)


def _read_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read fine-tuning config {path}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def validate(cls, data: dict, source: str = "config"):
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {exc.error_count()} problem(s): " + format_validation_error(exc)) from None


def recipe_kind(path: str | Path) -> str:
    """``ranker`` (the default) or ``retriever``: which trainer a recipe is for."""
    kind = _read_yaml(path).get("kind", "ranker")
    if kind not in ("ranker", "retriever"):
        raise ConfigError(f"{path}: kind must be 'ranker' or 'retriever', not {kind!r}")
    return kind


def load_ranker_config(path: str | Path) -> RankerFinetuneConfig:
    return validate(RankerFinetuneConfig, _read_yaml(path), str(path))


def load_retriever_config(path: str | Path) -> RetrieverFinetuneConfig:
    return validate(RetrieverFinetuneConfig, _read_yaml(path), str(path))
