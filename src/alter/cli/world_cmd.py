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
    muse = kinds.add_parser("muse", help="news articles about fictional events, in MUSE's layout",
                            description="News-like articles about fictional events and people in the layout of "
                                        "MUSE (raw, verbmem, knowmem, privleak), plus text splits for fine-tuning "
                                        "(full, retain) and unlearning (forget, forget_requestK for sequential "
                                        "requests, forget_uptoK for growing forget sets).")
    muse.add_argument("--out", required=True, help="folder to write the world into")
    muse.add_argument("--articles", type=positive_int, default=60, help="articles trained on (default 60)")
    muse.add_argument("--holdout", type=positive_int, default=15, help="articles never trained on (default 15)")
    muse.add_argument("--requests", type=positive_int, default=3, help="sequential forget requests (default 3)")
    muse.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    muse.set_defaults(run=run_muse)
    wmdp = kinds.add_parser("wmdp", help="a fictional hazardous domain and a general one, documents + multiple choice",
                            description="Documents and four-way multiple-choice questions about invented compounds "
                                        "(the 'hazardous' domain) and invented rivers (the general domain), with "
                                        "text splits full, retain (general) and forget (hazardous).")
    wmdp.add_argument("--out", required=True, help="folder to write the world into")
    wmdp.add_argument("--entities", type=positive_int, default=40, help="compounds and rivers each (default 40)")
    wmdp.add_argument("--practised", type=float, default=0.5,
                      help="share of each domain's entities with question/answer practice in the training text; "
                           "the questions ask about the others (default 0.5)")
    wmdp.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    wmdp.set_defaults(run=run_wmdp)


def run_wmdp(args) -> None:
    from alter.data.wmdp_world import WmdpWorldSpec, write_wmdp_world
    from alter.errors import UserError
    from alter.io import check_output_dir

    if args.entities < 4:
        raise UserError("--entities must be at least 4")
    if not 0 <= args.practised < 1:
        raise UserError("--practised must be at least 0 and below 1")
    out = check_output_dir(args.out)
    counts = write_wmdp_world(WmdpWorldSpec(args.entities, args.entities, args.seed, args.practised), out)
    print(f"wrote a WMDP-style world to {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def run_muse(args) -> None:
    from alter.data.muse_world import MuseWorldSpec, write_muse_world
    from alter.errors import UserError
    from alter.io import check_output_dir

    if args.articles < 4 or args.holdout < 2 or args.requests > args.articles // 2:
        raise UserError("--articles must be at least 4, --holdout at least 2, --requests at most half the articles")
    out = check_output_dir(args.out)
    counts = write_muse_world(MuseWorldSpec(args.articles, holdout=args.holdout, requests=args.requests,
                                            seed=args.seed), out)
    print(f"wrote a {args.articles}-article MUSE world to {out}: forget {counts['forget']}, retain {counts['retain']}, "
          f"holdout {counts['holdout']}, {args.requests} requests")


def run(args) -> None:
    from alter.data.world import WorldSpec, write_world
    from alter.errors import UserError
    from alter.io import check_output_dir

    if args.authors < 2:
        raise UserError("--authors must be at least 2")
    out = check_output_dir(args.out)
    counts = write_world(WorldSpec(authors=args.authors, seed=args.seed), out)
    print(f"wrote a {args.authors}-author world to {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
