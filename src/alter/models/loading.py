"""Load a causal LM and its tokenizer by alias, local folder or hub id: safetensors only, no remote code by default."""

from __future__ import annotations

import json
from pathlib import Path

from alter.errors import UserError
from alter.models.smollm2 import smollm2_folder

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def resolve_model_path(spec: str) -> str:
    """Map an alias to a local folder; leave folders and hub ids as they are."""
    if spec == "smollm2":
        return str(smollm2_folder())
    return spec


def check_local_model(folder: Path, trust_remote_code: bool) -> None:
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: not a model folder (no config.json)")
    files = [p.name for p in folder.iterdir()]
    if not any(name.endswith(".safetensors") for name in files):
        pickles = [name for name in files if name.endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise UserError(f"{folder}: only pickle checkpoints ({pickles[0]}); refused, alter loads safetensors only")
        raise UserError(f"{folder}: model folder has no weights (*.safetensors)")
    config = json.loads((folder / "config.json").read_text())
    if "auto_map" in config and not trust_remote_code:
        raise UserError(f"{folder}: model needs remote code (config.json auto_map); pass --trust-remote-code to allow it")


def load_model(spec: str, *, trust_remote_code: bool = False):
    """Return (model in fp32, eval mode; tokenizer). `spec`: 'smollm2', a local folder, or a hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec == "tiny":
        raise UserError("model 'tiny' is built from data: use it with `alter finetune --model tiny --data DIR`")
    path = resolve_model_path(spec)
    local = Path(path)
    if local.exists():
        check_local_model(local, trust_remote_code)
    elif path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise UserError(f"{path}: model folder not found")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, use_safetensors=True, trust_remote_code=trust_remote_code, dtype="float32"
        )
    except OSError as err:
        if local.exists():
            raise UserError(f"{path}: cannot load model ({str(err).splitlines()[0]})") from None
        raise UserError(f"unknown model {path!r}: not a local folder, an alias (smollm2, tiny) or a cached hub id") from None
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise UserError(f"{path}: model needs remote code; pass --trust-remote-code to allow it") from None
        raise
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def copy_out_of_file_map(model) -> None:
    """Give every parameter and buffer its own memory. Loaded weights are views of the safetensors file's memory map,
    and every page of the file any forward touched stays resident while one tensor of the file lives: replacing a
    layer's weights (`hold_frozen_linears_in_compute_dtype`) would free nothing. Measured on SmolLM2 after it held its
    Linears in bf16: 1030 MB resident mapped, 726 MB copied (see docs/results.md, "ALTER's unlearning cost")."""
    import torch

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()
