"""Plain LoRA through peft, for the baselines' `--lora` runs and LoRA fine-tuning."""

from __future__ import annotations


def attach_lora(model, rank: int, alpha: int):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, config)
