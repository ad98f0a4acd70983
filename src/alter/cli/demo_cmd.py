"""`alter demo`: the whole job on its embedded default, offline."""

from __future__ import annotations

from alter.cli.options import add_precision, non_negative_int, positive_int


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "demo", help="the whole job offline: world, target/retain models, ALTER vs baselines, report",
        description="Generate a 20-author world, fine-tune target and retain models (cached after the first run), "
                    "unlearn 10%% of the authors with each method, evaluate (out-of-sample probes included), print "
                    "the table and a few answers before and after, and write OUT/report.html. Model: "
                    "SmolLM2-135M-Instruct (bundled), or the tiny model with --fast.")
    parser.add_argument("--fast", action="store_true", help="use the tiny model (a few minutes)")
    parser.add_argument("--methods", help="as in `alter bench tofu` (default alter,npo,graddiff; with --fast their "
                                          "learning rates are raised for the tiny model)")
    parser.add_argument("--out", help="demo folder (default runs/demo; --fast: runs/demo-fast)")
    parser.add_argument("--cache", help="cache of target and retain models (default $ALTER_CACHE/bench)")
    parser.add_argument("--authors", type=positive_int, default=20, help="authors in the world (default 20)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the world (default 0)")
    add_precision(parser)
    parser.set_defaults(run=run)


def run(args) -> None:
    from pathlib import Path

    from alter.io import cache_root, check_output_dir
    from alter.models.precision import default_device, resolve_precision
    from alter.pipelines.demo import demo_plan, run_demo
    from alter.report.html import build_report

    model = "tiny" if args.fast else "smollm2"
    out = Path(check_output_dir(args.out or ("runs/demo-fast" if args.fast else "runs/demo")))
    cache = Path(check_output_dir(args.cache or cache_root() / "bench"))
    plan = demo_plan(out, model, args.methods, cache, resolve_precision(args.precision, default_device(), model),
                     args.authors, args.seed)
    print("\n" + run_demo(plan))
    print(f"report: {build_report(out)}")
