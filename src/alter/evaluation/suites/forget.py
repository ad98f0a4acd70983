"""The `forget` suite: what a user with their own forget file, and no retain model, can know (docs/data.md).

For the forget rows and, when given, the retain rows: the answer (or text) likelihood and, for question/answer rows,
greedy ROUGE-L recall, in sample and under the out-of-sample probes that need no extra data (an instruction, another
system prompt, an unrelated turn, a few-shot prefix of retain rows, the plain format; and the rows' own
the rewording families need fields a user's file does not have). With a holdout file, the membership-inference AUCs of forget
(members) against holdout (non-members). `alter eval forget` evaluates the model before unlearning too (the base
under `--adapter`, or `--before MODEL`) and reports it as `before_*`, so the change is visible.
"""

from __future__ import annotations

import numpy as np

from alter.data.formatting import DEFAULT_CONTEXT, encode_prompt, encode_qa, encode_rows
from alter.data.sources import Columns, read_rows_file
from alter.evaluation.probes import QUESTION_FIELDS, build_probe, parse_families
from alter.evaluation.runner import DatasetSpec, Generation, Outputs
from alter.evaluation.suites.base import Suite
from alter.evaluation.suites.tofu import attack_scores
from alter.metrics import privacy
from alter.metrics.rouge import rouge_l

VERSION = 1
SIDES = ("forget", "retain")
TABLE_KEYS = ("forget_prob", "forget_ROUGE", "retain_prob", "retain_ROUGE", "mia_min_k")


def _rows(options: dict, role: str) -> list[dict]:
    path = options.get(role)
    columns = Columns(options["question_column"], options["answer_column"], options["text_column"])
    return read_rows_file(path, columns, f"--{role}") if path else []


def prepare_options(options: dict) -> dict:
    for role in ("forget", "retain", "holdout"):
        _rows(options, role)  # a missing or malformed file fails here, before a model loads
    parse_families(options.get("probes", "all"))
    return options


def datasets(options: dict, tokenizer) -> list[DatasetSpec]:
    specs = []
    retain = _rows(options, "retain")
    for side, rows in (("forget", _rows(options, "forget")), ("retain", retain)):
        if not rows:
            continue
        specs.append(_dataset(side, rows, DEFAULT_CONTEXT))
        qa = [row for row in rows if "question" in row]
        families = [f for f in parse_families(options.get("probes", "all")) if f not in QUESTION_FIELDS]
        for family in families if qa else ():
            # your own files' rows are taken as one request about one subject (follow_up finds its name, if any)
            probe = build_probe(family, qa, [r for r in retain if "question" in r and r not in qa], tokenizer, len(qa))
            specs.append(_dataset(f"{side}_probe_{family}", probe.rows or [], probe.context,
                                  [probe.note] if probe.note else []))
    holdout = _rows(options, "holdout")
    if holdout:
        specs.append(_dataset("holdout", holdout, DEFAULT_CONTEXT, generate=False))
    return specs


def _dataset(key: str, rows: list[dict], context, notes=None, generate: bool = True) -> DatasetSpec:
    def sequences(tokenizer, row):
        if "text" in row:
            return encode_rows(tokenizer, [row])[:1]
        return [encode_qa(tokenizer, row["question"], row["answer"], row.get("context", context))]

    def prompt(tokenizer, row):
        return encode_prompt(tokenizer, row["question"], row.get("context", context)) if "question" in row else []

    qa = bool(rows) and "question" in rows[0]
    return DatasetSpec(key, rows, _item, sequences, Generation(prompt) if qa and generate else None,
                       notes=notes or [])


def _item(row: dict, outputs: Outputs) -> dict:
    scores = outputs.scores[0]
    text = row.get("answer", row.get("text", ""))
    log = {"label": row.get("question", text[:120]), "nll": scores.nll, "prob": float(np.exp(-scores.nll)),
           "mia": attack_scores(scores, text)}
    if outputs.generation is not None:
        log.update(generation=outputs.generation, rouge_recall=rouge_l(outputs.generation, text)["recall"])
    return log


def _summary_of(log: dict) -> dict:
    out = {}
    for key in [k for k in log if k != "meta" and k != "holdout" and log[k]["items"]]:
        items = list(log[key]["items"].values())
        out[f"{key}_prob"] = float(np.mean([i["prob"] for i in items]))
        out[f"{key}_nll"] = float(np.mean([i["nll"] for i in items]))
        if "rouge_recall" in items[0]:
            out[f"{key}_ROUGE"] = float(np.mean([i["rouge_recall"] for i in items]))
    if "holdout" in log and "forget" in log:
        for attack in ("loss", "zlib", "min_k", "min_k_plus_plus"):
            members = [i["mia"][attack] for i in log["forget"]["items"].values()]
            others = [i["mia"][attack] for i in log["holdout"]["items"].values()]
            out[f"mia_{attack}"] = privacy.attack_auc(members, others)
    return out


def summarize(log: dict, before: dict | None = None) -> tuple[dict, list[str]]:
    """The model's values; with the log of the model before unlearning, its values as `before_*` too."""
    summary = _summary_of(log)
    notes = list(dict.fromkeys(n for key in log if key != "meta" for n in log[key].get("notes", [])))
    if before is None:
        notes.append("no model before unlearning to compare with: pass --adapter (the base is evaluated too) or "
                     "--before MODEL")
    else:
        summary.update({f"before_{key}": value for key, value in _summary_of(before).items()})
    if "holdout" not in log:
        notes.append("no --holdout file: membership-inference AUCs skipped")
    return summary, notes


def check_reference(options: dict, settings, reference: dict) -> list[str]:
    return []


SUITE = Suite("forget", "FORGET_EVAL.json", "FORGET_SUMMARY.json", VERSION, prepare_options, datasets, summarize,
              check_reference, TABLE_KEYS, compares_before=True)
