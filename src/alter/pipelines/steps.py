"""The bench's steps as library entry points with plain-data arguments, for `run_isolated`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path


def finetune_step(model: str, data: str, split: str, out: str, precision: str, options: dict) -> dict:
    from alter.training.finetune import default_recipe, finetune

    recipe = default_recipe(model, lora=False)
    train = replace(recipe.train, precision=precision, **{k: v for k, v in options.items() if k in
                                                          ("epochs", "learning_rate", "batch_size", "max_steps")})
    recipe = replace(recipe, train=train)
    return finetune(model, data, split, out, recipe, resume=True)


def unlearn_step(model: str, data: str, forget_split: str, retain_split: str, method: str, overrides: list[str],
                 out: str) -> dict:
    from alter.data.sources import from_tofu
    from alter.methods import get_method
    from alter.pipelines.runs import unlearn_run
    from alter.training.recipe import build_recipe

    recipe = build_recipe(method, None, overrides)
    source = from_tofu(data, forget_split, retain_split, get_method(method).needs_retain)
    return unlearn_run(model, source, recipe, out, resume=True)


def eval_step(suite: str, model: str, adapter: str | None, options: dict, settings: dict, out: str,
              reference: str | None = None) -> dict:
    from alter.adapters.loading import load_model_with_adapter
    from alter.evaluation.runner import EvalSettings
    from alter.evaluation.suites import get_suite
    from alter.evaluation.suites.base import evaluate, load_reference, summarize_with, write_outputs

    chosen = get_suite(suite)
    options = chosen.prepare_options(options)
    reference_log = load_reference(reference, chosen) if reference else None
    eval_settings = EvalSettings(**settings)
    loaded, tokenizer = load_model_with_adapter(model, adapter, precision=eval_settings.precision)
    from alter.models import default_device

    loaded.to(default_device())
    warnings = chosen.check_reference(options, eval_settings, reference_log) if reference_log else []
    log = evaluate(chosen, loaded, tokenizer, options, eval_settings)
    log["meta"].update(model=model, adapter=adapter)
    summary, notes = summarize_with(chosen, log, reference_log, warnings)
    write_outputs(Path(out), chosen, log, summary, notes)
    return summary


def audit_step(model: str, adapter: str | None, data: str, forget_split: str, reference: str, retain_model: str,
               out: str, precision: str, settings: dict, cache: str) -> dict:
    from alter.pipelines.audit import AuditPlan, run_audit

    return run_audit(AuditPlan(model, adapter, data, Path(out), forget_split, reference, retain_model,
                               precision=precision, settings=settings, cache=Path(cache)))
