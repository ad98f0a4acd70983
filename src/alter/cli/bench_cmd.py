"""`alter bench tofu|muse|wmdp`: methods side by side, over worlds and seeds, with intervals; `alter bench collect`:
the same tables over runs made outside one bench."""

from __future__ import annotations

from alter.cli.options import add_precision, positive_float, positive_int

COMMON = ("On one --data folder, or on --worlds N generated worlds (seeds 1..N; --tuning-world adds seed 0, reported "
          "apart): fine-tunes the target (full) and retain models unless cached, runs each method from the target in "
          "its own process for every --seeds value, evaluates everything against the retain model, and writes "
          "OUT/bench.json (every unit's row) and OUT/bench.md (mean and 95%% interval over units, and each method's "
          "paired difference from the first method on the same units). Finished steps are reused, so a rerun "
          "resumes. A bench with ALTER also runs alter-paper.")
DEFAULT_METHODS = {"tofu": "alter,npo,graddiff", "muse": "alter,npo,graddiff,simnpo,rmu",
                   "wmdp": "alter,npo,graddiff,simnpo,rmu,rmu-canonical"}


def add_parser(commands) -> None:
    parser = commands.add_parser("bench", help="compare unlearning methods side by side",
                                 description="Compare unlearning methods on one benchmark.")
    kinds = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True, parser_class=type(parser))
    tofu = kinds.add_parser(
        "tofu", help="TOFU: target + retain models per world, every method per seed, the TOFU suite, bench.json/md",
        description=COMMON + " bench.md also shows what comes back under each out-of-sample probe.")
    _common(tofu, "tofu", "TOFU-format folder")
    tofu.add_argument("--authors", type=positive_int, default=20, help="authors per generated world (default 20)")
    tofu.add_argument("--forget-split", default="forget10", help="forget split (default forget10)")
    tofu.add_argument("--probes", default="all", help="out-of-sample probe families (see `alter eval tofu --help`)")
    tofu.add_argument("--audit", action="store_true",
                      help="also audit every run (`alter audit`: relearning, quantisation, adapter removal) against "
                           "its world's target and retain models; bench.md gets an audit table")
    muse = kinds.add_parser(
        "muse", help="MUSE: verbatim, knowledge and privacy on news-like worlds; scalability and sustainability",
        description=COMMON + " Models train on the worlds' raw text. Protocols: forget (the whole forget set), "
                             "scalability (the growing sets forget_upto1..R-1, each from the target), sustainability "
                             "(requests 1..R in turn, each from the previous result; ALTER adds heads per request, and "
                             "its last adapter is also evaluated without request 1).")
    _common(muse, "muse", "folder in the layout of `alter world muse`")
    muse.add_argument("--protocols", default="forget,scalability,sustainability",
                      help="comma-separated: forget, scalability, sustainability (default all)")
    wmdp = kinds.add_parser(
        "wmdp", help="WMDP-style: forget a hazardous domain's documents, keep a general one; multiple-choice accuracy",
        description=COMMON + " Models train on the world's documents; the WMDP suite scores both question sets.")
    _common(wmdp, "wmdp", "folder in the layout of `alter world wmdp`")
    collect = kinds.add_parser(
        "collect", help="bench.json/md over TOFU runs made outside one bench (alter unlearn + alter eval tofu)",
        description="Rows, undone and intervals of runs made outside one bench, computed as `alter bench tofu` "
                    "computes them: for instance a changed default on the worlds of earlier benches, beside their "
                    "baselines. LISTING is a JSON list of {world, run, run_dir, eval_dir[, seed, tuning]}; every world "
                    "needs a 'target' and a 'retain' entry; tuning: true on any entry of a world makes it the "
                    "tuning world, shown apart.")
    collect.add_argument("listing", help="JSON file: the runs to collect")
    collect.add_argument("--out", required=True, help="folder for bench.json and bench.md")
    collect.set_defaults(run=run_collect)


def _common(parser, suite: str, data_help: str) -> None:
    parser.add_argument("--model", required=True, help="base model for the target and retain models ('tiny', 'smollm2'...)")
    parser.add_argument("--data", help=f"{data_help} (else --worlds)")
    parser.add_argument("--worlds", type=positive_int, help="generate this many held-out worlds (seeds 1..N)")
    parser.add_argument("--tuning-world", action="store_true", help="also run world seed 0, the one tuned on, apart")
    parser.add_argument("--seeds", type=positive_int, default=1, help="unlearning runs per method and world (seeds 0..K-1)")
    parser.add_argument("--methods", default=DEFAULT_METHODS[suite],
                        help="comma-separated runs: METHOD, METHOD+lora, alter-paper, rmu-canonical, or "
                             f"NAME=METHOD:section.key=value:... (default {DEFAULT_METHODS[suite]})")
    parser.add_argument("--out", required=True, help="bench folder")
    parser.add_argument("--cache", help="folder for target and retain models and their evaluations, shared by benches "
                                        "(default $ALTER_CACHE/bench, else ~/.cache/alter/bench)")
    add_precision(parser, "; reaches fine-tuning, unlearning and evaluation, and keys the cache")
    parser.add_argument("--finetune-epochs", type=positive_float, help="epochs of the target and retain fine-tuning")
    parser.add_argument("--finetune-lr", type=positive_float, help="learning rate of the target and retain fine-tuning")
    parser.add_argument("--finetune-max-steps", type=positive_int, help="cap on their optimizer steps (quick runs)")
    parser.add_argument("--limit", type=positive_int, help="evaluate only the first N items of each dataset")
    parser.add_argument("--max-new-tokens", type=positive_int, help="generation cap of the evaluations (default 200)")
    parser.set_defaults(run=run, suite=suite)


def run(args) -> None:
    from alter.pipelines.bench import markdown, run_bench

    print(markdown(run_bench(plan_from(args))), end="")


def run_collect(args) -> None:
    import json
    from pathlib import Path

    from alter.errors import UserError
    from alter.io import check_output_dir
    from alter.pipelines.bench import collect_bench, markdown

    try:
        listing = json.loads(Path(args.listing).read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{args.listing}: cannot read a JSON list of runs ({error})") from None
    if not isinstance(listing, list) or not all(isinstance(entry, dict) for entry in listing):
        raise UserError(f"{args.listing}: expected a JSON list of objects")
    print(markdown(collect_bench(listing, Path(check_output_dir(args.out)))), end="")


def plan_from(args):
    from pathlib import Path

    from alter.errors import UserError
    from alter.io import cache_root, check_output_dir
    from alter.models.precision import default_device, resolve_precision
    from alter.pipelines.bench import PROTOCOLS, BenchPlan, Variant, World, generated_worlds, with_paper_variant

    forget_split = getattr(args, "forget_split", None) or "forget"
    protocols = tuple(p.strip() for p in getattr(args, "protocols", "forget").split(",") if p.strip())
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown or "forget" not in protocols:
        raise UserError(f"--protocols: expected forget plus any of scalability, sustainability, got "
                        f"{', '.join(sorted(unknown)) or 'no forget'}")
    if args.suite == "tofu":
        from alter.data.splits import holdout_split_for
        from alter.evaluation.probes import parse_families

        holdout_split_for(forget_split)  # checks the name
        parse_families(args.probes)
    if bool(args.data) == bool(args.worlds):
        raise UserError("give --data DIR or --worlds N (one of them)")
    variants = with_paper_variant([Variant.parse(t.strip()) for t in args.methods.split(",") if t.strip()])
    if not variants:
        raise UserError("--methods: no method given")
    out = Path(check_output_dir(args.out))
    cache = Path(check_output_dir(args.cache or cache_root() / "bench"))
    if args.data:
        _check_data(args.suite, args.data, forget_split)
        worlds = [World(Path(args.data).name or "data", args.data)]
    else:
        worlds = generated_worlds(out, args.worlds, getattr(args, "authors", 20), args.tuning_world, args.suite)
    finetune = {k: v for k, v in (("epochs", args.finetune_epochs), ("learning_rate", args.finetune_lr),
                                  ("max_steps", args.finetune_max_steps)) if v}
    settings = {k: v for k, v in (("limit", args.limit), ("max_new_tokens", args.max_new_tokens)) if v}
    precision = resolve_precision(args.precision, default_device(), args.model)
    return BenchPlan(args.model, worlds, forget_split, variants, out, cache, precision, list(range(args.seeds)),
                     getattr(args, "probes", "all"), finetune, settings, audit=getattr(args, "audit", False),
                     suite=args.suite, protocols=protocols)


def _check_data(suite: str, data: str, forget_split: str) -> None:
    """A missing or malformed split fails here, before any training."""
    from alter.data.tofu import TofuData
    from alter.evaluation.suites import get_suite

    for split in (forget_split, "full", "retain") if suite != "tofu" else (forget_split,):
        TofuData(data).load(split)
    if suite != "tofu":
        get_suite(suite).prepare_options({"data": data})
