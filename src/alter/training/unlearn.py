"""`alter unlearn`: run any method's plan on the shared loop and save the result.

A method prepares a plan (the model to train, its phases, how to save); this module runs every phase on the one
loop, checkpointing each in `checkpoints/<phase>`, then publishes the output (a model folder or an adapter, apart
from the base) with `manifest.json` last. `observe(moment, model, tokenizer)`, when given, sees the model before
("before") and after ("after") unlearning: the caller can record what it needs from both.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from typing import Callable

import torch
from accelerate.utils import DistributedType

from alter.data.batching import UnlearnBatches, width_multiple
from alter.data.contexts import encode_variants, plain_items
from alter.data.formatting import encode_qa, encode_rows, has_chat_template
from alter.data.sources import UnlearnData
from alter.data.subjects import forget_subject_names, name_swapped_forget_rows, renamed_forget_rows
from alter.errors import UserError
from alter.methods import get_method
from alter.methods.base import LoraChoice, Setup
from alter.models import load_model, resolve_precision
from alter.models.loading import copy_out_of_file_map
from alter.models.precision import compute_dtype, hold_frozen_linears_in_compute_dtype
from alter.training.finetune import make_accelerator, prepare_output, publish_run
from alter.training.loop import TrainResult, train
from alter.training.manifest import run_manifest
from alter.training.recipe import Recipe
from alter.resources import count_parameters, release_freed_memory


def unlearn(model_spec: str, data: UnlearnData, recipe: Recipe, out: str, resume: bool = False,
            overwrite: bool = False, trust_remote_code: bool = False,
            observe: Callable | None = None) -> dict:
    method = get_method(recipe.method)
    if method.needs_retain and not data.retain:
        raise UserError(f"--method {method.name} needs retain data (what to keep): pass --retain FILE")
    if not data.forget:
        raise UserError("the forget set is empty")
    out_dir = prepare_output(out, resume, overwrite)
    config = replace(recipe.train, learning_rate=recipe.learning_rate)
    precision = resolve_precision(config.precision, "cuda" if torch.cuda.is_available() else "cpu", model_spec)
    accelerator = make_accelerator(precision, find_unused_parameters=method.sparse_gradients)
    torch.manual_seed(config.seed)
    model, tokenizer = load_model(model_spec, trust_remote_code=trust_remote_code)
    if compute_dtype(precision) is not None:  # frozen Linears may be held in it below: they must free their memory
        copy_out_of_file_map(model)
    model.to(accelerator.device)
    text_rows = any("text" in row for row in data.forget + data.retain)
    variants = 1 if text_rows else config.context_variants  # contexts frame questions; plain text has none
    if variants > 1:
        plain = config.context_plain_format
        forget_items = encode_variants(tokenizer, data.forget, variants, config.seed, plain)
        retain_items = encode_variants(tokenizer, data.retain, variants, config.seed + 1, plain)
        # without a chat template the plain format is the rows' own: nothing is in a format the target lacks
        plain_rows = {"forget": plain_items(len(data.forget), variants, config.seed, plain),
                      "retain": plain_items(len(data.retain), variants, config.seed + 1, plain)} \
            if has_chat_template(tokenizer) else {}
    else:
        forget_items, retain_items = encode_rows(tokenizer, data.forget), encode_rows(tokenizer, data.retain)
        plain_rows = {}
    idk_items = None
    if method.needs_idk:
        if any("text" in row for row in data.forget):
            raise UserError(f"--method {method.name} pairs forget questions with refusals: it needs question/answer rows")
        idk_items = [encode_qa(tokenizer, row["question"], data.refusals[i % len(data.refusals)])
                     for i, row in enumerate(data.forget)]
    source = UnlearnBatches(forget_items, retain_items, idk_items, config.batch_size, config.seed,
                            tokenizer.pad_token_id, accelerator.process_index, accelerator.num_processes, variants,
                            width_multiple(precision))
    if observe is not None:
        observe("before", model, tokenizer)
    started = time.time()
    windows = len(forget_items) != len(data.forget) * variants  # long documents split: the row maps are gone
    setup = Setup(model, tokenizer, forget_items, retain_items, idk_items, source, recipe.params,
                  config.learning_rate, config.seed, precision,
                  LoraChoice(recipe.lora.enabled, recipe.lora.rank, recipe.lora.alpha),
                  sharded=accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED),
                  fit_retain=None if windows else [r * variants + v for r in data.fit_retain for v in range(variants)],
                  base_model=model_spec, item_groups=None if windows or data.groups is None
                  else [g for g in data.groups for _ in range(variants)], variants=variants,
                  unseen=encode_rows(tokenizer, data.unseen),
                  retain_turns=[] if text_rows else [(row["question"], row["answer"]) for row in data.retain],
                  name_swaps=(lambda pool, copies: []) if text_rows else partial(_name_swaps, data, config.seed),
                  renamed=[] if text_rows else _renamed_items(tokenizer, data, variants, config),
                  subjects=[] if text_rows else forget_subject_names(data),
                  plain={} if windows else plain_rows)
    base_linears = {id(m) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    preparing = time.perf_counter()
    plan = method.prepare(setup)
    prepare_seconds = round(time.perf_counter() - preparing, 2)
    release_freed_memory()  # what preparing freed; the first step's peak sat on top of it (ALTER: 1.0 GB, SmolLM2)
    trainable = {id(p): p.numel() for phase in plan.phases for group in phase.param_groups for p in group["params"]}
    parameters = {"total": count_parameters(plan.model)["total"], "trainable": sum(trainable.values())}
    freed = 0
    if plan.output == "adapter" and not setup.sharded:  # the base is not saved: its frozen Linears can be rounded
        freed = hold_frozen_linears_in_compute_dtype(plan.model, precision, set(trainable), among=base_linears)
    results = []
    for phase in plan.phases:
        phase_config = replace(config, epochs=phase.epochs if phase.epochs is not None else config.epochs)
        results.append(train(plan.model, phase.objective, source, phase_config, accelerator,
                             checkpoints=out_dir / "checkpoints" / phase.name, param_groups=phase.param_groups,
                             resume=resume, description=f"{method.name} {phase.name}"))
    unwrapped = accelerator.unwrap_model(plan.model)
    if observe is not None:
        observe("after", unwrapped, tokenizer)
    manifest = run_manifest(
        "unlearn", started=started, precision=precision, accelerator=accelerator, seed=config.seed,
        parameters=parameters, result=combined(results, [phase.name for phase in plan.phases], prepare_seconds),
        prepare_seconds=prepare_seconds, frozen_linears_compute_dtype_mb=round(freed / 2**20, 1),
        method=method.name, base_model=model_spec, output=plan.output, **data.origin,
        data_fingerprint=data.fingerprint, forget_rows=len(data.forget), retain_rows=len(data.retain),
        unseen_rows=len(data.unseen),
        recipe=recipe.as_dict(), **({"learning_rate": config.learning_rate} if method.uses_learning_rate else {}),
        **plan.facts)
    if accelerator.is_main_process:
        publish_run(out_dir, manifest, plan.save)
    accelerator.wait_for_everyone()
    return manifest


def _name_swaps(data: UnlearnData, seed: int, pool: str, copies: int) -> list[tuple[str, str]]:
    return [(row["question"], row["answer"]) for row in name_swapped_forget_rows(data, seed, pool, copies)]


def _renamed_items(tokenizer, data: UnlearnData, variants: int, config) -> list:
    """Each forget item with its subject renamed (`renamed_forget_rows`), in the item's own context (the same seeded
    draw as the forget items'); None where the row names no subject."""
    rows = renamed_forget_rows(data, config.seed)
    if not any(rows):
        return []
    filled = [row or original for row, original in zip(rows, data.forget)]
    items = (encode_variants(tokenizer, filled, variants, config.seed, config.context_plain_format) if variants > 1
             else encode_rows(tokenizer, filled))
    return [None if rows[index // variants] is None else item for index, item in enumerate(items)]


def combined(results: list[TrainResult], names: list[str], prepare_seconds: float) -> TrainResult:
    """One result for a run of several phases; the loss curve names each point's phase. Its wall time includes the
    method's preparation (ALTER's frozen passes and fits, longer than its training on SmolLM2)."""
    curve = [{"phase": name, **point} for name, result in zip(names, results) for point in result.loss_curve] \
        if len(results) > 1 else results[0].loss_curve
    return TrainResult(steps=sum(r.steps for r in results), tokens=sum(r.tokens for r in results),
                       wall_seconds=round(prepare_seconds + sum(r.wall_seconds for r in results), 2),
                       peak_memory_mb=max(r.peak_memory_mb for r in results), loss_curve=curve)
