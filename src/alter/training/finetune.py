"""`alter finetune`: build the TOFU target model (on `full`) or retain model (on `retainXX`) with one recipe.

Loss on answer tokens only. Full fine-tuning or LoRA (merged into the weights on save, so the result is a plain
model). Output: safetensors weights, tokenizer, and `manifest.json` written last (its presence means complete).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from alter.adapters.lora import attach_lora
from alter.data.batching import QABatches, width_multiple
from alter.data.formatting import encode_rows
from alter.data.tofu import TofuData
from alter.errors import UserError
from alter.io import check_output_dir
from alter.methods.base import mean_nll
from alter.models import build_tiny, load_model, resolve_precision
from alter.training.loop import TrainConfig, train, write_manifest
from alter.training.manifest import run_manifest
from alter.resources import count_parameters


@dataclass
class FinetuneRecipe:
    train: TrainConfig = field(default_factory=TrainConfig)
    lora: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    general_knowledge: bool = False


# Tiny models start from random weights and need a high learning rate and many epochs to memorise a world.
# They know no real-world facts either, so they also learn the general-knowledge sets (real authors, world facts)
# that model_utility reads: what a pretrained model brings. Pretrained models follow TOFU's recipe scaled to a
# 135M model (lr measured on SmolLM2).
GENERAL_KNOWLEDGE = ("real_authors", "world_facts")
DEFAULT_RECIPES = {
    "tiny": FinetuneRecipe(TrainConfig(epochs=20, learning_rate=2e-3, batch_size=16, warmup_ratio=0.05),
                           general_knowledge=True),
    "pretrained": FinetuneRecipe(TrainConfig(epochs=5, learning_rate=5e-5, batch_size=8)),
    "pretrained-lora": FinetuneRecipe(TrainConfig(epochs=5, learning_rate=1e-3, batch_size=8), lora=True),
}


def default_recipe(model_spec: str, lora: bool) -> FinetuneRecipe:
    if model_spec == "tiny":
        return replace(DEFAULT_RECIPES["tiny"], lora=lora)
    return DEFAULT_RECIPES["pretrained-lora" if lora else "pretrained"]


def make_accelerator(precision: str, find_unused_parameters: bool = False):
    """`find_unused_parameters`: DDP must not wait for gradients of parameters a step leaves unused (ALTER's forget
    heads of absent sub-domains)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    return Accelerator(mixed_precision=mixed, cpu=not torch.cuda.is_available(),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)])


def load_or_build(model_spec: str, data_root: str, seed: int, trust_remote_code: bool = False):
    if model_spec == "tiny":
        return build_tiny(TofuData(data_root).texts(), seed=seed)
    return load_model(model_spec, trust_remote_code=trust_remote_code)


def prepare_output(out: str, resume: bool, overwrite: bool) -> Path:
    """Refuse to replace a finished run or restart over an unfinished one's checkpoints unless told to."""
    out_dir = check_output_dir(out)
    if (out_dir / "manifest.json").exists() and not (resume or overwrite):
        raise UserError(f"{out_dir}: already holds a finished run; pass --overwrite or choose another --out")
    if (out_dir / "checkpoints").is_dir() and not (resume or overwrite):
        raise UserError(f"{out_dir}: holds the checkpoints of an unfinished run; pass --resume to continue it or "
                        "--overwrite to start over")
    if overwrite:
        (out_dir / "manifest.json").unlink(missing_ok=True)
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return out_dir


def finetune(model_spec: str, data_root: str, split: str, out: str, recipe: FinetuneRecipe, resume: bool = False,
             overwrite: bool = False, trust_remote_code: bool = False) -> dict:
    out_dir = prepare_output(out, resume, overwrite)
    data = TofuData(data_root)
    splits = [split, *(name for name in GENERAL_KNOWLEDGE if recipe.general_knowledge and data.has(name))]
    rows = [row for name in splits for row in data.load(name)]
    config = recipe.train
    precision = resolve_precision(config.precision, "cuda" if torch.cuda.is_available() else "cpu", model_spec)
    accelerator = make_accelerator(precision)
    torch.manual_seed(config.seed)
    model, tokenizer = load_or_build(model_spec, data_root, config.seed, trust_remote_code)
    if recipe.lora:
        model = attach_lora(model, recipe.lora_rank, recipe.lora_alpha)
    items = encode_rows(tokenizer, rows)
    source = QABatches(items, config.batch_size, config.seed, tokenizer.pad_token_id,
                       accelerator.process_index, accelerator.num_processes, width_multiple(precision))
    parameters = count_parameters(model)
    started = time.time()
    result = train(model, lambda model, batch: (mean_nll(model, batch), {}), source, config, accelerator,
                   checkpoints=out_dir / "checkpoints", resume=resume, description=f"finetune {split}")
    model = accelerator.unwrap_model(model)
    if recipe.lora:
        model = model.merge_and_unload()
    manifest = run_manifest(
        "finetune", started=started, precision=precision, accelerator=accelerator, seed=config.seed,
        parameters=parameters, result=result, model=model_spec, data=str(data_root), split=split,
        data_fingerprint=data.fingerprint(splits), training_splits=splits, rows=len(rows),
        recipe={"train": asdict(config), "lora": recipe.lora, "lora_rank": recipe.lora_rank,
                "lora_alpha": recipe.lora_alpha, "general_knowledge": recipe.general_knowledge})
    if accelerator.is_main_process:
        save_model_folder(model, tokenizer, out_dir, manifest)
    accelerator.wait_for_everyone()
    return manifest


def publish_run(out_dir: Path, manifest: dict, write) -> None:
    """`write(folder)` fills a staging folder whose files then move into `out_dir`; the manifest comes last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=out_dir))
    try:
        write(staging)
        for path in staging.iterdir():
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    write_manifest(out_dir, manifest)


def save_model_folder(model, tokenizer, out_dir: Path, manifest: dict) -> None:
    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    publish_run(out_dir, manifest, write)
