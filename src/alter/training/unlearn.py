"""`alter unlearn`: run one unlearning method on the shared loop and save the result.

Full fine-tuning saves a plain model folder; adapter training (peft LoRA) saves only the adapter, apart from the
base, with the base model named in the manifest. Either way `manifest.json` is written last.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from alter.data.batching import UnlearnBatches
from alter.data.formatting import encode_qa
from alter.data.tofu import TofuData
from alter.data.world import IDK
from alter.errors import UserError
from alter.io import ensure_writable_dir
from alter.methods import get_method
from alter.methods.base import Reference
from alter.models import load_model, resolve_precision
from alter.models.precision import machine_facts
from alter.training.finetune import attach_lora, make_accelerator, publish_run, save_model_folder
from alter.training.loop import train
from alter.training.recipe import Recipe
from alter.training.resources import count_parameters, library_versions


def refusal_answers(data_root: str) -> list[str]:
    """One refusal per line from `idontknow.jsonl` in the data folder, else the built-in list."""
    path = Path(data_root) / "idontknow.jsonl"
    if path.is_file():
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if lines:
            return lines
    return list(IDK)


def check_overlap(forget: list[dict], retain: list[dict]) -> int:
    forget_questions = {row["question"] for row in forget}
    overlap = sum(row["question"] in forget_questions for row in retain)
    if overlap:
        print(f"alter: warning: {overlap} retain items share a question with the forget set", file=sys.stderr)
    return overlap


def unlearn(model_spec: str, data_root: str, forget_split: str, retain_split: str, recipe: Recipe, out: str,
            resume: bool = False, overwrite: bool = False, trust_remote_code: bool = False) -> dict:
    out_dir = ensure_writable_dir(out)
    if (out_dir / "manifest.json").exists() and not (resume or overwrite):
        raise UserError(f"{out_dir}: already holds a finished run; pass --overwrite or choose another --out")
    (out_dir / "manifest.json").unlink(missing_ok=True)
    method = get_method(recipe.method)
    data = TofuData(data_root)
    forget_rows = data.load(forget_split)
    retain_rows = data.load(retain_split) if method.needs_retain else []
    overlap = check_overlap(forget_rows, retain_rows)
    config = replace(recipe.train, learning_rate=recipe.learning_rate)
    precision = resolve_precision(config.precision, "cuda" if torch.cuda.is_available() else "cpu")
    accelerator = make_accelerator(precision, find_unused_parameters=method.runner is not None)
    torch.manual_seed(config.seed)
    model, tokenizer = load_model(model_spec, trust_remote_code=trust_remote_code)
    encode = lambda rows, field="answer": [encode_qa(tokenizer, r["question"], r[field]) for r in rows]  # noqa: E731
    forget_items, retain_items = encode(forget_rows), encode(retain_rows)
    idk_items = None
    if method.needs_idk:
        refusals = refusal_answers(data_root)
        idk_items = [encode_qa(tokenizer, r["question"], refusals[i % len(refusals)]) for i, r in enumerate(forget_rows)]
    source = UnlearnBatches(forget_items, retain_items, idk_items, config.batch_size, config.seed,
                            tokenizer.pad_token_id, accelerator.process_index, accelerator.num_processes)
    started = time.time()
    extra, runtime = {}, None
    if method.runner is not None:
        model.to(accelerator.device)
        runtime, result, facts, clusters = method.runner(model, tokenizer, forget_items, retain_items, source,
                                                         recipe, accelerator, out_dir, resume, precision)
        extra = {"alter": facts}
        parameters = count_parameters(model)
    else:
        if recipe.lora.enabled:
            model = attach_lora(model, recipe.lora.rank, recipe.lora.alpha)
        needs_reference = method.needs_reference or getattr(recipe.params, "retain_loss", "nll") == "kl"
        reference = Reference(model, adapter_based=recipe.lora.enabled) if needs_reference else None
        parameters = count_parameters(model)
        result = train(model, lambda m, b: method.loss(m, b, recipe.params, reference), source, config, accelerator,
                       run_dir=out_dir, resume=resume, description=f"unlearn {method.name}")
        extra = {"reference_copy_mb": round((reference.parameter_bytes() if reference else 0) / 2**20, 1)}
    model = accelerator.unwrap_model(model)
    manifest = {
        "kind": "unlearn",
        "status": "complete",
        "method": method.name,
        "base_model": model_spec,
        "output": "adapter" if recipe.lora.enabled or runtime else "model",
        "data": str(data_root),
        "forget_split": forget_split,
        "retain_split": retain_split,
        "data_fingerprint": data.fingerprint([forget_split, retain_split]),
        "forget_rows": len(forget_rows),
        "retain_rows": len(retain_rows),
        "forget_retain_overlap": overlap,
        "recipe": recipe.as_dict(),
        "learning_rate": config.learning_rate,
        "seed": config.seed,
        "precision": precision,
        "machine": machine_facts(accelerator.device, precision),
        "processes": accelerator.num_processes,
        "parameters": parameters,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "versions": library_versions(),
        **extra,
        **result.summary(),
    }
    if accelerator.is_main_process:
        if runtime is not None:
            publish_run(out_dir, manifest, lambda folder: runtime.save(folder, model_spec, clusters))
        elif recipe.lora.enabled:
            publish_run(out_dir, manifest, lambda folder: model.save_pretrained(folder, safe_serialization=True))
        else:
            save_model_folder(model, tokenizer, out_dir, manifest)
    accelerator.wait_for_everyone()
    return manifest
