"""`alter audit`: relearning, quantisation and adapter removal against an unlearned model."""

from __future__ import annotations

from alter.cli.options import add_precision, positive_int


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "audit", help="attack an unlearned model: relearning, quantisation, adapter removal (AUDIT.json, AUDIT.md)",
        description="Applies each attack to --model (with --adapter) and, under the same attack, to the target "
                    "(--reference) and the retain model (--retain-model), measures the forget answers (and a retain "
                    "control), and reports 'undone': how much of the forgotten probability comes back. docs/audit.md.")
    parser.add_argument("--model", required=True, help="the unlearned model, or the base of --adapter")
    parser.add_argument("--adapter", help="adapter folder on top of --model (ALTER or peft LoRA)")
    parser.add_argument("--data", required=True, help="TOFU-format folder")
    parser.add_argument("--forget-split", default="forget10", help="forget split (default forget10)")
    parser.add_argument("--reference", help="the target model before unlearning (for 'undone')")
    parser.add_argument("--retain-model", help="the retain model (for 'undone')")
    parser.add_argument("--relearn-lrs", default="1e-5,1e-4",
                        help="relearning learning rates, comma-separated (default 1e-5,1e-4; '' for none)")
    parser.add_argument("--relearn-steps", type=positive_int, default=10, help="relearning steps (default 10)")
    parser.add_argument("--relearn-batch", type=positive_int, default=4, help="relearning batch size (default 4)")
    parser.add_argument("--quantisation", default="8,4,8g128,4g128",
                        help="bits per weight, per channel or per group (e.g. 4g128); default 8,4,8g128,4g128; '' for none")
    parser.add_argument("--limit", type=positive_int, help="measure only the first N items of each set")
    parser.add_argument("--max-new-tokens", type=positive_int, default=200, help="generation cap (default 200)")
    add_precision(parser)
    parser.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(run=run)
    table = commands.add_parser(
        "audit-table", help="one table per attack over several `alter audit` folders of the same world",
        description="Reads each NAME=DIR's AUDIT.json and prints, per attack, the target and retain model under it "
                    "and every audited model: the measured probability, undone, and the retain control.")
    table.add_argument("audits", nargs="+", metavar="NAME=DIR", help="a row name and an `alter audit` output folder")
    table.set_defaults(run=run_table)


def run_table(args) -> None:
    import json
    from pathlib import Path

    from alter.errors import UserError
    from alter.pipelines.audit import compare_markdown

    audits = {}
    for item in args.audits:
        name, _, folder = item.rpartition("=")
        path = Path(folder) / "AUDIT.json"
        if not name or not path.is_file():
            raise UserError(f"{item}: expected NAME=DIR with DIR/AUDIT.json (an `alter audit` output folder)")
        audits[name] = json.loads(path.read_text())
    print(compare_markdown(audits), end="")


def run(args) -> None:
    from pathlib import Path

    from alter.io import cache_root, check_output_dir
    from alter.models.precision import default_device, resolve_precision
    from alter.pipelines.audit import AuditPlan, check_plan, run_audit

    plan = AuditPlan(args.model, args.adapter, args.data, Path(check_output_dir(args.out)), args.forget_split,
                     args.reference, args.retain_model, parse_rates(args.relearn_lrs), args.relearn_steps,
                     args.relearn_batch, parse_quantisation(args.quantisation),
                     resolve_precision(args.precision, default_device(), args.model),
                     {k: v for k, v in (("limit", args.limit), ("max_new_tokens", args.max_new_tokens)) if v},
                     cache_root() / "audit")
    check_plan(plan)
    audit = run_audit(plan)
    print((plan.out / "AUDIT.md").read_text(), end="")
    print(f"wrote {plan.out / 'AUDIT.json'} ({audit['meta']['wall_seconds']:.0f} s)")


def parse_rates(text: str) -> tuple[float, ...]:
    from alter.errors import UserError

    try:
        rates = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"--relearn-lrs: expected numbers separated by commas, got {text!r}") from None
    if any(rate <= 0 for rate in rates):
        raise UserError(f"--relearn-lrs: learning rates must be positive, got {text!r}")
    return rates


def parse_quantisation(text: str) -> tuple:
    from alter.errors import UserError

    schemes = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        bits, _, group = part.partition("g")
        if not bits.isdigit() or int(bits) not in (2, 3, 4, 8) or (group and not group.isdigit()):
            raise UserError(f"--quantisation: {part!r} is not BITS or BITSgGROUP with 2, 3, 4 or 8 bits (e.g. 4g128)")
        schemes.append((int(bits), int(group) if group else None))
    return tuple(schemes)
