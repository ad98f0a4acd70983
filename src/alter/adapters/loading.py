"""A model with an adapter folder on top: peft LoRA (`adapter_config.json`) or ALTER (`alter_config.json`)."""

from __future__ import annotations

from pathlib import Path

from alter.adapters.model import AlterModel, is_alter_adapter
from alter.errors import UserError
from alter.models.loading import copy_out_of_file_map, load_model
from alter.models.precision import compute_dtype, hold_frozen_linears_in_compute_dtype


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


def load_model_with_adapter(spec: str, adapter: str | None, trust_remote_code: bool = False,
                            precision: str = "fp32"):
    """`precision`: what the model will run under. Under bf16 or fp16 autocast the base's Linear weights are held in
    that dtype before the adapter is attached (autocast rounds them to it in every forward: the same outputs, bit for
    bit, in less memory), so such a model is for that autocast only; an output layer tied to the input embedding
    gets its own copy in that dtype, which adapters' frozen weights would otherwise cast again at every token. Shown
    by `pytest tests/test_precision.py -k frozen_linears`."""
    model, tokenizer = load_model(spec, trust_remote_code=trust_remote_code)
    if compute_dtype(precision) is not None:
        copy_out_of_file_map(model)
        hold_frozen_linears_in_compute_dtype(model, precision, trainable=set(), untie=True)
    return (model if adapter is None else attach_adapter(model, adapter)), tokenizer
