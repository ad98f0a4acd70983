"""`alter export`: a plain model that behaves like the unlearned one, with no removable adapter."""

from __future__ import annotations

from alter.cli.options import add_precision, positive_float, positive_int


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "export", help="write a plain model (no removable adapter) that behaves like base + adapter",
        description="Folds a peft LoRA or an ungated ALTER adapter into the weights (exact), or distils a gated "
                    "ALTER adapter into a copy of the base on --data's forget, retain and general questions. The "
                    "output is a plain Hugging Face model folder; audit it like any other (docs/audit.md).")
    parser.add_argument("--model", required=True, help="the base model the adapter was trained on")
    parser.add_argument("--adapter", required=True, help="adapter folder (ALTER or peft LoRA)")
    parser.add_argument("--data", help="TOFU-format folder (needed to distil a gated ALTER adapter)")
    parser.add_argument("--forget-split", default="forget10", help="forget split (default forget10)")
    parser.add_argument("--epochs", type=positive_float, default=3.0, help="distillation epochs (default 3)")
    parser.add_argument("--lr", type=positive_float, default=2e-5, help="distillation learning rate (default 2e-5)")
    parser.add_argument("--retain-items", type=positive_int, default=400, help="retain questions distilled on")
    add_precision(parser)
    parser.add_argument("--out", required=True, help="output model folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an export in --out")
    parser.set_defaults(run=run)


def run(args) -> None:
    from alter.models.precision import default_device, resolve_precision
    from alter.pipelines.export import ExportPlan, export

    precision = resolve_precision(args.precision, default_device(), args.model)
    plan = ExportPlan(args.model, args.adapter, args.out, args.data, args.forget_split, args.epochs, args.lr,
                      retain_items=args.retain_items, precision=precision, overwrite=args.overwrite)
    manifest = export(plan)
    print(f"saved {args.out}: {manifest['method']} ({manifest['wall_seconds']:.0f} s)")
