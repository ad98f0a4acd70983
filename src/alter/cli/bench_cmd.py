"""`alter bench tofu`: methods side by side on one target/retain pair."""

from __future__ import annotations

import shlex
from pathlib import Path

from alter.cli.options import PRECISION_HELP


def add_parser(commands) -> None:
    parser = commands.add_parser("bench", help="compare unlearning methods side by side",
                                 description="Compare unlearning methods on one benchmark.")
    kinds = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    tofu = kinds.add_parser(
        "tofu", help="TOFU: target + retain models, every method, the TOFU suite, bench.json and bench.md",
        description="Fine-tunes the target (full) and retain (retainXX) models into OUT unless present, runs each "
                    "method in its own process from the target, evaluates everything against the retain model, and "
                    "writes OUT/bench.json and OUT/bench.md. Finished steps are reused, so a rerun resumes.")
    tofu.add_argument("--model", required=True, help="base model for the target and retain models ('tiny', 'smollm2'...)")
    tofu.add_argument("--data", required=True, help="TOFU-format folder")
    tofu.add_argument("--forget-split", default="forget10", help="forget split (default forget10)")
    tofu.add_argument("--methods", default="alter,npo,graddiff",
                      help="comma-separated runs: METHOD, METHOD+lora, or NAME=METHOD:section.key=value:... "
                           "(default alter,npo,graddiff)")
    tofu.add_argument("--out", required=True, help="bench folder")
    tofu.add_argument("--cache", help="folder for target and retain models and their evaluations, shared by benches "
                                      "(default $ALTER_CACHE/bench, else ~/.cache/alter/bench)")
    tofu.add_argument("--precision", default="auto", help=PRECISION_HELP + "; reaches fine-tuning, unlearning "
                                                               "and evaluation, and keys the cache")
    tofu.add_argument("--finetune-args", default="", help="extra arguments for `alter finetune`, quoted")
    tofu.add_argument("--unlearn-args", default="", help="extra arguments for every `alter unlearn`, quoted")
    tofu.add_argument("--eval-args", default="", help="extra arguments for every `alter eval tofu`, quoted")
    tofu.set_defaults(run=run)


def run(args) -> None:
    from alter.evaluation.bench import markdown_table, run_bench

    bench = run_bench(plan_from(args, args.model, args.data))
    print(markdown_table(bench["rows"]), end="")


def plan_from(args, model: str, data: str):
    from alter.data.tofu import TofuData
    from alter.evaluation.bench import BenchPlan, Variant
    from alter.evaluation.tofu import holdout_split
    from alter.io import ensure_writable_dir
    from alter.models.precision import default_device, resolve_precision
    from alter.io import cache_root

    holdout_split(args.forget_split)  # checks the name
    TofuData(data).load(args.forget_split)  # a missing or malformed split fails here, before any training
    variants = [Variant.parse(text.strip()) for text in args.methods.split(",") if text.strip()]
    cache = ensure_writable_dir(args.cache or cache_root() / "bench")
    precision = resolve_precision(args.precision, default_device())
    return BenchPlan(model, data, args.forget_split, variants, Path(ensure_writable_dir(args.out)), Path(cache), precision,
                     shlex.split(args.eval_args), shlex.split(args.finetune_args), shlex.split(args.unlearn_args))
