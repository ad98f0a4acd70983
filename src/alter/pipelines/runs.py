"""`alter unlearn` as a pipeline: the library's unlearning run, plus what the report needs from the model while it
is loaded: a few forget and retain answers scored token by token before and after (`TOKENS.json`), and a verdict
on whether anything was forgotten."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alter.data.formatting import encode_rows
from alter.data.sources import UnlearnData
from alter.evaluation.runner import token_record
from alter.evaluation.scoring import score_answers
from alter.io import write_json
from alter.metrics.aggregate import forgetting_verdict
from alter.training.recipe import Recipe
from alter.training.unlearn import unlearn

TOKEN_ITEMS = 4
TOKENS_FILE = "TOKENS.json"


def unlearn_run(model_spec: str, data: UnlearnData, recipe: Recipe, out: str, resume: bool = False,
                overwrite: bool = False, trust_remote_code: bool = False) -> dict:
    """Train, save, and write TOKENS.json beside the run; the manifest is returned with the verdict added."""
    subsets = {"forget": data.forget[:TOKEN_ITEMS], "retain": data.retain[:TOKEN_ITEMS]}
    records: dict[str, dict] = {}

    def observe(moment, model, tokenizer):
        was_training = model.training
        model.eval()
        records[moment] = {name: _records(model, tokenizer, rows, recipe.train.precision, model_spec)
                           for name, rows in subsets.items() if rows}
        model.train(was_training)

    manifest = unlearn(model_spec, data, recipe, out, resume=resume, overwrite=overwrite,
                       trust_remote_code=trust_remote_code, observe=observe)
    before, after = (_mean_probability(records[m]["forget"]) for m in ("before", "after"))
    moved, line = forgetting_verdict(before, after, where=f" (first {len(subsets['forget'])} forget items)")
    tokens = {"rows": {name: [_label(row) for row in rows] for name, rows in subsets.items()}, **records,
              "verdict": {"moved": moved, "line": line, "forget_probability": [before, after]}}
    if Path(out, "manifest.json").is_file():  # rank 0 published the run
        write_json(Path(out) / TOKENS_FILE, tokens)
    return {**manifest, "verdict": tokens["verdict"]}


def _records(model, tokenizer, rows: list[dict], precision: str, model_spec: str) -> list[dict]:
    from alter.models.precision import resolve_precision

    device = next(model.parameters()).device
    items = encode_rows(tokenizer, rows)[: len(rows)]
    precision = resolve_precision(precision, device, model_spec)
    scores = score_answers(model, items, tokenizer.pad_token_id, precision=precision)
    return [token_record(tokenizer, s) for s in scores]


def _mean_probability(records: list[dict]) -> float:
    """Mean over items of the length-normalised answer probability (exp of the mean token log-probability)."""
    return float(np.mean([np.exp(np.mean(np.log(np.maximum(r["prob"], 1e-12)))) for r in records]))


def _label(row: dict) -> str:
    return row.get("question", row.get("text", ""))[:200]
