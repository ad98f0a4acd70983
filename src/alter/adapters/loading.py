"""A model with an adapter folder on top: peft LoRA (`adapter_config.json`) or ALTER (`alter_config.json`)."""

from __future__ import annotations

from pathlib import Path

from alter.adapters.model import AlterModel, is_alter_adapter
from alter.errors import UserError
from alter.models.loading import load_model


def attach_adapter(model, adapter: str | Path):
    folder = Path(adapter)
    if not folder.is_dir():
        raise UserError(f"{folder}: adapter folder not found")
    if (folder / "adapter_config.json").is_file():
        if not (folder / "adapter_model.safetensors").is_file():
            raise UserError(f"{folder}: adapter has no adapter_model.safetensors; alter loads safetensors only")
        from peft import PeftModel

        return PeftModel.from_pretrained(model, folder).eval()
    if is_alter_adapter(folder):
        AlterModel.load(model, folder)
        return model
    raise UserError(f"{folder}: not an adapter folder (no adapter_config.json or alter_config.json)")


def load_model_with_adapter(spec: str, adapter: str | None, trust_remote_code: bool = False):
    model, tokenizer = load_model(spec, trust_remote_code=trust_remote_code)
    return (model if adapter is None else attach_adapter(model, adapter)), tokenizer
