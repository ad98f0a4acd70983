"""What a suite is, and what every suite does the same way: run its datasets, stamp the log, write the per-item log
before the summary (so a failing aggregate never loses the passes), and check a reference log before comparing."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from alter.errors import UserError
from alter.evaluation.runner import EvalSettings, run_datasets
from alter.io import read_json, write_json
from alter.models.precision import machine_facts
from alter.resources import library_versions, peak_memory_mb


@dataclass(frozen=True)
class Suite:
    name: str
    log_file: str  # per-item log, e.g. TOFU_EVAL.json
    summary_file: str  # one number per key, e.g. TOFU_SUMMARY.json
    version: int  # bump when a change moves any number the suite writes: benches key cached evaluations on it
    prepare_options: Callable  # (options: dict) -> options checked (fails fast, before a model loads) and completed
    datasets: Callable  # (options: dict, tokenizer) -> list[DatasetSpec]
    summarize: Callable  # (log, reference log or None) -> (summary, notes)
    check_reference: Callable  # (options, settings, reference log) -> warnings; UserError when they cannot compare
    table_keys: tuple[str, ...]  # the keys a bench table shows
    compares_before: bool = False  # the reference log is the model before unlearning, evaluated on the spot


def evaluate(suite: Suite, model, tokenizer, options: dict, settings: EvalSettings, rank: int = 0,
             world: int = 1) -> dict:
    started = time.perf_counter()
    specs = suite.datasets(options, tokenizer)
    log = run_datasets(model, tokenizer, specs, settings, rank, world)
    device = next(model.parameters()).device
    log["meta"] = {"suite": suite.name, "suite_version": suite.version, **{k: v for k, v in options.items()},
                   "precision": settings.precision, "machine": machine_facts(device, settings.precision),
                   "max_new_tokens": settings.max_new_tokens, "limit": settings.limit, "processes": world,
                   "versions": library_versions(), "wall_seconds": round(time.perf_counter() - started, 2),
                   "peak_memory_mb": round(peak_memory_mb(), 1)}
    return log


def load_reference(path: str | Path, suite: Suite) -> dict:
    log = read_json(path)
    if not isinstance(log, dict) or log.get("meta", {}).get("suite", suite.name) != suite.name:
        raise UserError(f"{path}: not a {suite.log_file} per-item log")
    return log


def summarize_with(suite: Suite, log: dict, reference: dict | None, warnings: list[str]) -> tuple[dict, list[str]]:
    """The summary, with the reference's warnings (from `check_reference`) among its notes."""
    summary, notes = suite.summarize(log, reference)
    return summary, warnings + notes


def write_outputs(out: Path, suite: Suite, log: dict, summary: dict, notes: list[str]) -> None:
    write_json(out / suite.log_file, log)
    write_json(out / suite.summary_file, {**summary, "notes": notes, "precision": log["meta"]["precision"],
                                          "machine": log["meta"]["machine"]})


def format_table(summary: dict) -> str:
    shown = {key: value for key, value in summary.items() if value is None or isinstance(value, (int, float))}
    width = max(len(key) for key in shown)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ---------"]
    for key, value in shown.items():
        lines.append(f"{key:<{width}}  {'null' if value is None else f'{value:.4g}'}")
    return "\n".join(lines)
