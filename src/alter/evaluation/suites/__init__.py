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
                                "conversation, few_shot, plain"}))),
}


def suite_names() -> tuple[str, ...]:
    return tuple(SUITES)


def get_suite(name: str):
    if name not in SUITES:
        raise UserError(f"unknown evaluation suite {name!r} (suites: {', '.join(SUITES)})")
    return importlib.import_module(SUITES[name].module).SUITE
