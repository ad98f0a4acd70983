"""`alter unlearn`: run an unlearning method from a target model."""

from __future__ import annotations

from alter.cli.options import PRECISION_HELP, add_run_options

from alter.errors import UserError
from alter.methods import METHODS


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "unlearn", help="make a target model forget a split (ALTER or a baseline method)",
        description="Unlearn --forget-split from --model, keeping --retain-split. Recipes: YAML files with sections "
                    "method, train, lora, params (see configs/unlearn/); --set section.key=value overrides any key. "
                    "With LoRA (--lora or lora.enabled=true) only the adapter is saved, and lora.learning_rate is used.")
    parser.add_argument("--list-methods", action="store_true", help="list the methods with one line each and exit")
    parser.add_argument("--model", help="the target model: a folder from `alter finetune`, 'smollm2' or a hub id")
    parser.add_argument("--data", help="TOFU-format folder or locuslab/TOFU")
    parser.add_argument("--forget-split", default="forget10", help="forget split (default forget10)")
    parser.add_argument("--retain-split", help="retain split (default: the complement, e.g. retain90 for forget10)")
    parser.add_argument("--method", help=f"one of: {', '.join(METHODS)}")
    parser.add_argument("--config", help="recipe YAML file")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe key, e.g. --set train.epochs=3 --set params.beta=0.2 (repeatable)")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of all weights")
    parser.add_argument("--seed", type=int, help="seed (default: train.seed of the recipe, 0)")
    parser.add_argument("--precision", help=PRECISION_HELP + " (default: train.precision of the recipe, auto)")
    parser.add_argument("--out", help="output folder: the model or adapter (safetensors) and manifest.json")
    add_run_options(parser)
    parser.set_defaults(run=run)


def run(args) -> None:
    from accelerate import PartialState

    from alter.training.recipe import build_recipe
    from alter.training.unlearn import unlearn

    if args.list_methods:
        for name, method in METHODS.items():
            print(f"{name:<12} {method.summary}")
        return
    for option in ("model", "data", "out"):
        if not getattr(args, option):
            raise UserError(f"--{option} is required (or use --list-methods)")
    overrides = list(args.set) + (["lora.enabled=true"] if args.lora else [])
    overrides += [f"train.seed={args.seed}"] if args.seed is not None else []
    overrides += [f"train.precision={args.precision}"] if args.precision is not None else []
    recipe = build_recipe(args.method, args.config, overrides)
    retain = args.retain_split or default_retain_split(args.forget_split)
    manifest = unlearn(args.model, args.data, args.forget_split, retain, recipe, args.out, resume=args.resume,
                       overwrite=args.overwrite, trust_remote_code=args.trust_remote_code)
    if not PartialState().is_main_process:  # every rank returns the manifest; one reports it
        return
    print(f"saved {args.out} ({manifest['output']}): {manifest['method']}, {manifest['steps']} steps, "
          f"{manifest['parameters']['trainable']:,} trainable parameters, {manifest['wall_seconds']:.1f} s, "
          f"peak memory {manifest['peak_memory_mb']:.0f} MB")


def default_retain_split(forget_split: str) -> str:
    digits = forget_split.removeprefix("forget")
    if not digits.isdigit():
        raise UserError(f"--forget-split {forget_split!r}: pass --retain-split explicitly")
    return f"retain{100 - int(digits)}"
