"""`alter eval SUITE`: evaluate a model (plus an optional adapter) with a registered suite; per-item log and summary."""

from __future__ import annotations

from alter.cli.options import add_precision, positive_int
from alter.evaluation.suites import SUITES


def add_parser(commands) -> None:
    parser = commands.add_parser("eval", help="evaluate a model with a benchmark suite",
                                 description="Evaluate a model with a registered suite; metric definitions in "
                                             "docs/metrics.md.")
    suites = parser.add_subparsers(dest="suite", metavar="SUITE", required=True, parser_class=type(parser))
    for info in SUITES.values():
        sub = suites.add_parser(info.name, help=info.help, description=info.description)
        sub.add_argument("--model", required=True, help="model folder, 'smollm2' or a hub id")
        sub.add_argument("--adapter", help="adapter folder to apply on top of --model (peft LoRA or ALTER)")
        for option in info.options:
            sub.add_argument(*option.flags, **option.kwargs)
        sub.add_argument("--out", required=True, help="output folder")
        sub.add_argument("--batch-size", type=positive_int, default=16, help="sequences per forward pass (default 16)")
        sub.add_argument("--generation-batch-size", type=positive_int, default=64,
                         help="sequences per greedy generation batch (default 64)")
        sub.add_argument("--max-new-tokens", type=positive_int, default=200,
                         help="greedy generation length cap where the suite does not fix one (default 200)")
        sub.add_argument("--limit", type=positive_int, help="evaluate only the first N items of each dataset")
        add_precision(sub, "; use fp32 to compare with another framework")
        sub.add_argument("--trust-remote-code", action="store_true", help="allow models that ship their own code")
        sub.set_defaults(run=run, options=[option.flags[0].lstrip("-").replace("-", "_") for option in info.options])


def run(args) -> None:
    import torch
    from accelerate import PartialState

    from alter.adapters.loading import load_model_with_adapter
    from alter.evaluation.runner import EvalSettings
    from alter.evaluation.suites import get_suite
    from alter.evaluation.suites.base import evaluate, format_table, load_reference, summarize_with, write_outputs
    from alter.io import check_output_dir
    from alter.models import resolve_precision

    suite = get_suite(args.suite)
    out = check_output_dir(args.out)
    options = suite.prepare_options({name: getattr(args, name) for name in args.options
                                     if name not in ("retain_logs", "before")})
    reference_path = getattr(args, "retain_logs", None)
    reference = load_reference(reference_path, suite) if reference_path else None
    state = PartialState(cpu=not torch.cuda.is_available())  # one process, or one of a launcher's
    precision = resolve_precision(args.precision, state.device, args.model)
    settings = EvalSettings(args.batch_size, args.generation_batch_size, args.max_new_tokens, args.limit, precision)
    warnings = suite.check_reference(options, settings, reference) if reference is not None else []
    if suite.compares_before:
        reference = _before_log(args, suite, options, settings, state)
    model, tokenizer = load_model_with_adapter(args.model, args.adapter, trust_remote_code=args.trust_remote_code,
                                               precision=precision)
    model.to(state.device)
    log = evaluate(suite, model, tokenizer, options, settings, state.process_index, state.num_processes)
    log["meta"].update(model=args.model, adapter=args.adapter)
    if not state.is_main_process:
        return
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(out, suite, log, {}, ["summary not computed yet"])  # the passes are safe before any aggregate
    summary, notes = summarize_with(suite, log, reference, warnings)
    write_outputs(out, suite, log, summary, notes)
    print(format_table(summary))
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {out / suite.log_file} and {out / suite.summary_file} ({log['meta']['wall_seconds']:.0f} s, "
          f"peak memory {log['meta']['peak_memory_mb']:.0f} MB, {precision})")


def _before_log(args, suite, options, settings, state):
    """The same suite on the model before unlearning: the base under --adapter, or --before MODEL."""
    from alter.adapters.loading import load_model_with_adapter
    from alter.evaluation.suites.base import evaluate

    before = getattr(args, "before", None) or (args.model if args.adapter else None)
    if before is None:
        return None
    model, tokenizer = load_model_with_adapter(before, None, trust_remote_code=args.trust_remote_code,
                                               precision=settings.precision)
    model.to(state.device)
    return evaluate(suite, model, tokenizer, options, settings, state.process_index, state.num_processes)
