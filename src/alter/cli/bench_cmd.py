"""`alter bench tofu`: methods side by side, over worlds and seeds, with intervals."""

from __future__ import annotations

from alter.cli.options import add_precision, non_negative_int, positive_float, positive_int


def add_parser(commands) -> None:
    parser = commands.add_parser("bench", help="compare unlearning methods side by side",
                                 description="Compare unlearning methods on one benchmark.")
    kinds = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True, parser_class=type(parser))
    tofu = kinds.add_parser(
        "tofu", help="TOFU: target + retain models per world, every method per seed, the TOFU suite, bench.json/md",
        description="On one --data folder, or on --worlds N generated worlds (seeds 1..N; --tuning-world adds seed 0, "
                    "reported apart): fine-tunes the target (full) and retain (retainXX) models unless cached, runs "
                    "each method from the target in its own process for every --seeds value, evaluates everything "
                    "against the retain model, and writes OUT/bench.json (every unit's row) and OUT/bench.md (mean "
                    "and 95%% interval over units, and what comes back under each out-of-sample probe). Finished "
                    "steps are reused, so a rerun resumes. A bench with ALTER also runs alter-paper.")
    tofu.add_argument("--model", required=True, help="base model for the target and retain models ('tiny', 'smollm2'...)")
    tofu.add_argument("--data", help="TOFU-format folder (else --worlds)")
    tofu.add_argument("--worlds", type=positive_int, help="generate this many held-out worlds (seeds 1..N)")
    tofu.add_argument("--authors", type=positive_int, default=20, help="authors per generated world (default 20)")
    tofu.add_argument("--tuning-world", action="store_true", help="also run world seed 0, the one tuned on, apart")
    tofu.add_argument("--seeds", type=positive_int, default=1, help="unlearning runs per method and world (seeds 0..K-1)")
    tofu.add_argument("--forget-split", default="forget10", help="forget split (default forget10)")
    tofu.add_argument("--methods", default="alter,npo,graddiff",
                      help="comma-separated runs: METHOD, METHOD+lora, alter-paper, or NAME=METHOD:section.key=value:... "
                           "(default alter,npo,graddiff)")
    tofu.add_argument("--probes", default="all", help="out-of-sample probe families (see `alter eval tofu --help`)")
    tofu.add_argument("--out", required=True, help="bench folder")
    tofu.add_argument("--cache", help="folder for target and retain models and their evaluations, shared by benches "
                                      "(default $ALTER_CACHE/bench, else ~/.cache/alter/bench)")
    add_precision(tofu, "; reaches fine-tuning, unlearning and evaluation, and keys the cache")
    tofu.add_argument("--finetune-epochs", type=positive_float, help="epochs of the target and retain fine-tuning")
    tofu.add_argument("--finetune-max-steps", type=positive_int, help="cap on their optimizer steps (quick runs)")
    tofu.add_argument("--limit", type=positive_int, help="evaluate only the first N items of each dataset")
    tofu.add_argument("--max-new-tokens", type=positive_int, help="generation cap of the evaluations (default 200)")
    tofu.add_argument("--audit", action="store_true",
                      help="also audit every run (`alter audit`: relearning, quantisation, adapter removal) against "
                           "its world's target and retain models; bench.md gets an audit table")
    tofu.set_defaults(run=run)


def run(args) -> None:
    from alter.pipelines.bench import markdown, run_bench

    print(markdown(run_bench(plan_from(args))), end="")


def plan_from(args):
    from pathlib import Path

    from alter.data.splits import holdout_split_for
    from alter.data.tofu import TofuData
    from alter.errors import UserError
    from alter.evaluation.probes import parse_families
    from alter.io import cache_root, check_output_dir
    from alter.models.precision import default_device, resolve_precision
    from alter.pipelines.bench import BenchPlan, Variant, World, generated_worlds, with_paper_variant

    holdout_split_for(args.forget_split)  # checks the name
    parse_families(args.probes)
    if bool(args.data) == bool(args.worlds):
        raise UserError("give --data DIR or --worlds N (one of them)")
    variants = with_paper_variant([Variant.parse(t.strip()) for t in args.methods.split(",") if t.strip()])
    if not variants:
        raise UserError("--methods: no method given")
    out = Path(check_output_dir(args.out))
    cache = Path(check_output_dir(args.cache or cache_root() / "bench"))
    if args.data:
        TofuData(args.data).load(args.forget_split)  # a missing or malformed split fails here, before any training
        worlds = [World(Path(args.data).name or "data", args.data)]
    else:
        worlds = generated_worlds(out, args.worlds, args.authors, args.tuning_world)
    finetune = {k: v for k, v in (("epochs", args.finetune_epochs), ("max_steps", args.finetune_max_steps)) if v}
    settings = {k: v for k, v in (("limit", args.limit), ("max_new_tokens", args.max_new_tokens)) if v}
    precision = resolve_precision(args.precision, default_device(), args.model)
    return BenchPlan(args.model, worlds, args.forget_split, variants, out, cache, precision, list(range(args.seeds)),
                     args.probes, finetune, settings, audit=args.audit)
