"""The registry of evaluation suites. Each entry names its module (imported on first use, so `alter --help` stays
fast) and the options it adds to `alter eval SUITE`; the module defines `SUITE` (`suites/base.py`). Adding a suite:
one module with a `SUITE` and one entry here (docs/architecture.md)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from alter.errors import UserError


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SuiteInfo:
    name: str
    help: str
    description: str
    module: str
    options: tuple[Option, ...] = ()


SUITES = {
    "tofu": SuiteInfo(
        "tofu", "TOFU: forget/retain/real-authors/world-facts metrics, out-of-sample probes, forget quality, utility, MIA",
        "Writes TOFU_EVAL.json (per-item values, likelihoods and generations) and TOFU_SUMMARY.json (one number per "
        "key) and prints a table. forget_quality and privleak need --retain-logs (docs/metrics.md).",
        "alter.evaluation.suites.tofu",
        (Option(("--data",), {"required": True, "help": "TOFU-format folder or locuslab/TOFU"}),
         Option(("--forget-split",), {"default": "forget10", "help": "forget01, forget05 or forget10 (default)"}),
         Option(("--retain-logs",), {"help": "the retain model's TOFU_EVAL.json (forget_quality and privleak)"}),
         Option(("--probes",), {"default": "all", "help": "out-of-sample probe families: all (default), none, or a "
                                "comma list of paraphrased_question, heldout_wording, instruction, system_prompt, "
                                "conversation, few_shot, follow_up, plain"}))),
    "muse": SuiteInfo(
        "muse", "MUSE: verbatim and knowledge memorisation, privacy leakage (MUSE-News/Books or a generated world)",
        "Writes MUSE_EVAL.json and MUSE_SUMMARY.json: forget_verbmem_ROUGE, forget/retain_knowmem_ROUGE, the MIA "
        "AUCs and privleak (with --retain-logs, the retrain model's MUSE_EVAL.json). docs/metrics.md.",
        "alter.evaluation.suites.muse",
        (Option(("--data",), {"required": True, "help": "MUSE-layout folder (e.g. ../shared/data/muse-news or "
                                                         "`alter world muse`) or muse-bench/MUSE-News"}),
         Option(("--retain-logs",), {"help": "the retrain model's MUSE_EVAL.json (privleak)"}),
         Option(("--max-text-tokens",), {"type": int, "default": 512,
                                         "help": "tokens of each privleak text scored (default 512)"}))),
    "wmdp": SuiteInfo(
        "wmdp", "WMDP-style multiple choice: accuracy on hazardous and general question sets, chance level stated",
        "Zero-shot four-way multiple choice scored by the log-likelihood of each option's letter, as "
        "lm-evaluation-harness scores WMDP and MMLU. Writes WMDP_EVAL.json (per-item predictions) and "
        "WMDP_SUMMARY.json (accuracy per subject and set, chance level).",
        "alter.evaluation.suites.wmdp",
        (Option(("--data",), {"required": True, "help": "folder with hazardous/ and general/ question files (e.g. "
                                                         "`alter world wmdp`), or cais/wmdp, cais/mmlu"}),)),
    "forget": SuiteInfo(
        "forget", "your own files: forget/retain likelihood and ROUGE before and after, probes, MIA vs a holdout file",
        "Evaluates --model (with --adapter) on the rows of --forget FILE, and of --retain FILE and --holdout FILE "
        "when given (JSON, JSONL, CSV or Parquet; question/answer or text columns), and the model before "
        "unlearning (the base under --adapter, or --before MODEL) as before_* keys. Writes FORGET_EVAL.json and "
        "FORGET_SUMMARY.json (docs/data.md).",
        "alter.evaluation.suites.forget",
        (Option(("--forget",), {"required": True, "metavar": "FILE", "help": "the rows that were to be forgotten"}),
         Option(("--retain",), {"metavar": "FILE", "help": "rows that were to be kept"}),
         Option(("--holdout",), {"metavar": "FILE", "help": "rows the model never saw, for membership inference"}),
         Option(("--before",), {"metavar": "MODEL", "help": "the model before unlearning, when --model is a full "
                                                             "unlearned model (with --adapter the base is used)"}),
         Option(("--question-column",), {"default": "question", "help": "question column of the files"}),
         Option(("--answer-column",), {"default": "answer", "help": "answer column of the files"}),
         Option(("--text-column",), {"default": "text", "help": "text column of the files"}),
         Option(("--probes",), {"default": "all", "help": "out-of-sample probe families: all (default), none, or a "
                                "comma list of instruction, system_prompt, conversation, few_shot, follow_up, plain"}))),
}


def suite_names() -> tuple[str, ...]:
    return tuple(SUITES)


def get_suite(name: str):
    if name not in SUITES:
        raise UserError(f"unknown evaluation suite {name!r} (suites: {', '.join(SUITES)})")
    return importlib.import_module(SUITES[name].module).SUITE
