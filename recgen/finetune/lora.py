"""The peft LoRA wrapper: only attention/MLP linear layers, no new tokens, no modules_to_save (vLLM-servable)."""

from __future__ import annotations

from .config import LoraSettings

#: Hub id written into adapter_config.json when the default (locally converted) SmolLM2 is the base.
DEFAULT_BASE_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def lora_config(settings: LoraSettings):
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules), bias="none", modules_to_save=None,
        layers_to_transform=list(settings.layers_to_transform) if settings.layers_to_transform else None,
    )


def wrap_model(model, settings: LoraSettings, gradient_checkpointing: bool = False):
    """A trainable PeftModel; the base weights stay frozen (and on disk untouched)."""
    from peft import get_peft_model

    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        model.config.use_cache = False
    peft_model = get_peft_model(model, lora_config(settings))
    return peft_model


def check_adapter_config(config: dict) -> list[str]:
    """Problems that would stop vLLM from serving an adapter (empty list = fine)."""
    from .config import ALLOWED_TARGET_MODULES, MAX_VLLM_LORA_RANK

    problems = []
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save={config['modules_to_save']} (vLLM rejects full embedding/lm_head weights)")
    targets = config.get("target_modules") or []
    if isinstance(targets, str):
        problems.append(f"target_modules is a regex {targets!r}; list the linear layers instead")
    else:
        bad = [t for t in targets if t not in ALLOWED_TARGET_MODULES]
        if bad:
            problems.append(f"target modules outside attention/MLP: {bad}")
    if int(config.get("r", 0)) > MAX_VLLM_LORA_RANK:
        problems.append(f"rank {config['r']} > vLLM's default max_lora_rank {MAX_VLLM_LORA_RANK}")
    return problems
