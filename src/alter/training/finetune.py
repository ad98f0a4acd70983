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

from alter.data.batching import QABatches
from alter.data.formatting import PLAIN_PROMPT, encode_qa
from alter.data.tofu import TofuData, read_rows
from alter.data.world import WORLD_INFO
from alter.errors import UserError
from alter.io import ensure_writable_dir
from alter.methods.base import mean_nll
from alter.models import build_tiny, load_model, resolve_precision
from alter.models.precision import machine_facts
from alter.training.loop import TrainConfig, train, write_manifest
from alter.training.resources import count_parameters, library_versions


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
        recipe = DEFAULT_RECIPES["tiny"]
        return replace(recipe, lora=lora)
    return DEFAULT_RECIPES["pretrained-lora" if lora else "pretrained"]


def make_accelerator(precision: str, find_unused_parameters: bool = False):
    """`find_unused_parameters`: DDP must not wait for gradients of parameters a step leaves unused (ALTER's forget
    heads of absent sub-domains)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    return Accelerator(mixed_precision=mixed, cpu=not torch.cuda.is_available(),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)])


def corpus_texts(data_root: str) -> list[str]:
    """Every string of a TOFU-format folder, in prompt format: what a tiny model's tokenizer is trained on."""
    root = Path(data_root)
    if not root.is_dir():
        raise UserError(f"{root}: data folder not found (model 'tiny' trains its tokenizer on a local folder)")
    texts = []
    for path in sorted(list(root.glob("*.json")) + list(root.glob("*.jsonl"))):
        if path.name == "idontknow.jsonl":
            texts.extend(path.read_text().splitlines())
            continue
        if path.name == WORLD_INFO:
            continue
        for row in read_rows(path):
            if isinstance(row, dict) and "question" in row:
                texts.append(PLAIN_PROMPT.format(question=row["question"]) + str(row.get("answer", "")))
                texts.extend(str(v) for v in _strings(row) if v != row["question"])
    return texts


def _strings(row: dict):
    for value in row.values():
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            yield from (v for v in value if isinstance(v, str))


def load_or_build(model_spec: str, data_root: str, seed: int, trust_remote_code: bool = False):
    if model_spec == "tiny":
        return build_tiny(corpus_texts(data_root), seed=seed)
    return load_model(model_spec, trust_remote_code=trust_remote_code)


def attach_lora(model, rank: int, alpha: int):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def finetune(
    model_spec: str,
    data_root: str,
    split: str,
    out: str,
    recipe: FinetuneRecipe,
    resume: bool = False,
    overwrite: bool = False,
    trust_remote_code: bool = False,
) -> dict:
    out_dir = ensure_writable_dir(out)
    if (out_dir / "manifest.json").exists() and not (resume or overwrite):
        raise UserError(f"{out_dir}: already holds a finished run; pass --overwrite or choose another --out")
    if overwrite:
        (out_dir / "manifest.json").unlink(missing_ok=True)
    data = TofuData(data_root)
    splits = [split, *(name for name in GENERAL_KNOWLEDGE if recipe.general_knowledge and data.has(name))]
    rows = [row for name in splits for row in data.load(name)]
    config = recipe.train
    precision = resolve_precision(config.precision, "cuda" if torch.cuda.is_available() else "cpu")
    accelerator = make_accelerator(precision)
    torch.manual_seed(config.seed)
    model, tokenizer = load_or_build(model_spec, data_root, config.seed, trust_remote_code)
    if recipe.lora:
        model = attach_lora(model, recipe.lora_rank, recipe.lora_alpha)
    items = [encode_qa(tokenizer, row["question"], row["answer"]) for row in rows]
    source = QABatches(items, config.batch_size, config.seed, tokenizer.pad_token_id,
                       accelerator.process_index, accelerator.num_processes)
    parameters = count_parameters(model)

    started = time.time()
    result = train(model, lambda model, batch: (mean_nll(model, batch), {}), source, config, accelerator, run_dir=out_dir, resume=resume,
                   description=f"finetune {split}")
    model = accelerator.unwrap_model(model)
    if recipe.lora:
        model = model.merge_and_unload()
    manifest = {
        "kind": "finetune",
        "status": "complete",
        "model": model_spec,
        "data": str(data_root),
        "split": split,
        "data_fingerprint": data.fingerprint(splits),
        "training_splits": splits,
        "rows": len(rows),
        "recipe": {"train": asdict(config), "lora": recipe.lora, "lora_rank": recipe.lora_rank, "lora_alpha": recipe.lora_alpha,
                   "general_knowledge": recipe.general_knowledge},
        "seed": config.seed,
        "precision": precision,
        "machine": machine_facts(accelerator.device, precision),
        "processes": accelerator.num_processes,
        "parameters": parameters,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "versions": library_versions(),
        **result.summary(),
    }
    if accelerator.is_main_process:
        save_model_folder(model, tokenizer, out_dir, manifest)
    accelerator.wait_for_everyone()
    return manifest


def publish_run(out_dir: Path, manifest: dict, write) -> None:
    """`write(folder)` fills a staging folder whose files then move into `out_dir`; the manifest comes last."""
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
