"""`alter world tofu`: generate a synthetic TOFU-like world."""

from __future__ import annotations

from alter.cli.options import non_negative_int, positive_int


def add_parser(commands) -> None:
    parser = commands.add_parser("world", help="generate a synthetic benchmark world",
                                 description="Generate a synthetic benchmark world in a standard schema.")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True, parser_class=type(parser))
    tofu = kinds.add_parser("tofu", help="fictitious authors in TOFU's schema",
                            description="Fictitious authors with 20 QA pairs each, written in the layout of TOFU "
                                        "(forget01/05/10, retain99/95/90, *_perturbed, holdoutXX, idontknow), plus a "
                                        "held-out question wording per item that only evaluation reads.")
    tofu.add_argument("--out", required=True, help="folder to write the splits into (created if missing)")
    tofu.add_argument("--authors", type=positive_int, default=200, help="number of authors in `full` (default 200)")
    tofu.add_argument("--seed", type=non_negative_int, default=0, help="random seed; the same seed gives the same world")
    tofu.set_defaults(run=run)


def run(args) -> None:
    from alter.data.world import WorldSpec, write_world
    from alter.errors import UserError
    from alter.io import check_output_dir

    if args.authors < 2:
        raise UserError("--authors must be at least 2")
    out = check_output_dir(args.out)
    counts = write_world(WorldSpec(authors=args.authors, seed=args.seed), out)
    print(f"wrote a {args.authors}-author world to {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
