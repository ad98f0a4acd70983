"""`alter unlearn`: make a target model forget a TOFU split or the rows of your own file."""

from __future__ import annotations

from alter.cli.options import add_precision, add_run_options, non_negative_int
from alter.methods import METHOD_NAMES


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "unlearn", help="make a target model forget a split or a file (ALTER or a baseline method)",
        description="Unlearn from --model either --forget-split of a TOFU-format --data folder (keeping its retain "
                    "split) or the rows of --forget FILE (keeping --retain FILE): JSON, JSONL, CSV or Parquet with "
                    "question/answer columns or a text column (docs/data.md). Recipes: YAML files with sections "
                    "method, train, lora, params (configs/unlearn/); --set section.key=value overrides any key. "
                    "Writes the model or adapter, manifest.json and TOKENS.json (a few answers token by token, "
                    "before and after); the last line says whether anything was forgotten.")
    parser.add_argument("--list-methods", action="store_true", help="list the methods with one line each and exit")
    parser.add_argument("--model", help="the target model: a folder from `alter finetune`, 'smollm2' or a hub id")
    parser.add_argument("--data", help="TOFU-format folder or locuslab/TOFU")
    parser.add_argument("--forget-split", default="forget10", help="forget split of --data (default forget10)")
    parser.add_argument("--retain-split", help="retain split of --data (default: the complement, e.g. retain90)")
    parser.add_argument("--forget", metavar="FILE", help="your own forget rows (instead of --data)")
    parser.add_argument("--retain", metavar="FILE", help="your own retain rows, kept while forgetting")
    parser.add_argument("--unseen", metavar="FILE",
                        help="rows like the forget rows that the model never saw (with --forget): with "
                             "params.forget_floor=unseen, ALTER holds forget answers at their likelihood; with "
                             "--data, the holdout split")
    parser.add_argument("--question-column", default="question", help="question column of the files")
    parser.add_argument("--answer-column", default="answer", help="answer column of the files")
    parser.add_argument("--text-column", default="text", help="text column of the files (plain-text rows)")
    parser.add_argument("--method", help=f"one of: {', '.join(METHOD_NAMES)}")
    parser.add_argument("--config", help="recipe YAML file")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe key, e.g. --set train.epochs=3 --set params.beta=0.2 (repeatable)")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of all weights (baselines)")
    parser.add_argument("--seed", type=non_negative_int, help="seed (default: train.seed of the recipe, 0)")
    add_precision(parser, " (default: train.precision of the recipe, auto)")
    parser.set_defaults(precision=None)
    parser.add_argument("--out", help="output folder: the model or adapter (safetensors) and manifest.json")
    add_run_options(parser)
    parser.set_defaults(run=run)


def run(args) -> None:
    from accelerate import PartialState

    from alter.errors import UserError
    from alter.methods import all_methods
    from alter.pipelines.runs import unlearn_run
    from alter.training.recipe import build_recipe

    if args.list_methods:
        for name, method in all_methods().items():
            print(f"{name:<12} {method.summary}")
        return
    for option in ("model", "out"):
        if not getattr(args, option):
            raise UserError(f"--{option} is required (or use --list-methods)")
    overrides = list(args.set) + (["lora.enabled=true"] if args.lora else [])
    overrides += [f"train.seed={args.seed}"] if args.seed is not None else []
    overrides += [f"train.precision={args.precision}"] if args.precision is not None else []
    recipe = build_recipe(args.method, args.config, overrides)
    data = unlearn_data(args, recipe)
    manifest = unlearn_run(args.model, data, recipe, args.out, resume=args.resume, overwrite=args.overwrite,
                           trust_remote_code=args.trust_remote_code)
    if not PartialState().is_main_process:  # every rank returns the manifest; one reports it
        return
    print(f"saved {args.out} ({manifest['output']}): {manifest['method']}, {manifest['steps']} steps, "
          f"{manifest['parameters']['trainable']:,} trainable parameters, {manifest['wall_seconds']:.1f} s, "
          f"peak memory {manifest['peak_memory_mb']:.0f} MB, {manifest['precision']}")
    verdict = manifest["verdict"]
    print(("" if verdict["moved"] else "warning: ") + verdict["line"])


def unlearn_data(args, recipe):
    from alter.data.sources import Columns, from_files, from_tofu
    from alter.data.splits import retain_split_for
    from alter.errors import UserError
    from alter.methods import get_method

    needs_retain = get_method(recipe.method).needs_retain
    if args.forget:
        if args.data:
            raise UserError("--forget FILE and --data DIR: give one source of forget rows")
        return from_files(args.forget, args.retain, Columns(args.question_column, args.answer_column, args.text_column),
                          args.unseen)
    if not args.data:
        raise UserError("--data DIR (a TOFU-format folder) or --forget FILE is required")
    if args.retain or args.unseen:
        raise UserError("--retain and --unseen FILE go with --forget FILE; with --data use --retain-split (the "
                        "holdout split is the unseen rows)")
    retain = args.retain_split or retain_split_for(args.forget_split)
    return from_tofu(args.data, args.forget_split, retain, needs_retain)
