"""`alter eval tofu`: the TOFU suite on a model (plus an optional adapter), per-item logs and a summary."""

from __future__ import annotations

from alter.cli.options import PRECISION_HELP


def add_parser(commands) -> None:
    parser = commands.add_parser("eval", help="evaluate a model on a benchmark",
                                 description="Evaluate a model on a benchmark; metric definitions in docs/metrics.md.")
    kinds = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    tofu = kinds.add_parser(
        "tofu", help="TOFU: forget/retain/real-authors/world-facts metrics, forget quality, model utility, MIA",
        description="Writes TOFU_EVAL.json (per-item values and generations) and TOFU_SUMMARY.json (one number per "
                    "key) to --out and prints a table. forget_quality and privleak need --retain-logs.")
    tofu.add_argument("--model", required=True, help="model folder, 'smollm2' or a hub id")
    tofu.add_argument("--adapter", help="adapter folder to apply on top of --model (peft LoRA or ALTER)")
    tofu.add_argument("--data", required=True, help="TOFU-format folder or locuslab/TOFU")
    tofu.add_argument("--forget-split", default="forget10", help="forget01, forget05 or forget10 (default)")
    tofu.add_argument("--retain-logs", help="the retain model's TOFU_EVAL.json (for forget_quality and privleak)")
    tofu.add_argument("--out", required=True, help="output folder")
    tofu.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass (default 16)")
    tofu.add_argument("--generation-batch-size", type=int, default=64,
                      help="sequences per greedy generation batch (default 64)")
    tofu.add_argument("--max-new-tokens", type=int, default=200, help="greedy generation length cap (default 200)")
    tofu.add_argument("--limit", type=int, help="evaluate only the first N items of each split (quick runs)")
    tofu.add_argument("--precision", default="auto", help=PRECISION_HELP + "; use fp32 to compare with another framework")
    tofu.add_argument("--trust-remote-code", action="store_true", help="allow models that ship their own code")
    tofu.set_defaults(run=run)


def run(args) -> None:
    from alter.data.tofu import TofuData
    from alter.evaluation.tofu import (EvalSettings, TofuEvaluation, format_table, load_retain_log, summarize,
                                       write_outputs)
    import torch
    from accelerate import PartialState

    from alter.io import ensure_writable_dir
    from alter.models import resolve_precision
    from alter.models.loading import load_model_with_adapter

    out = ensure_writable_dir(args.out)
    data = TofuData(args.data)
    retain_log = load_retain_log(args.retain_logs) if args.retain_logs else None
    state = PartialState(cpu=not torch.cuda.is_available())  # one process, or one of a launcher's
    device = state.device
    precision = resolve_precision(args.precision, device)
    model, tokenizer = load_model_with_adapter(args.model, args.adapter, trust_remote_code=args.trust_remote_code)
    model.to(device)
    settings = EvalSettings(args.batch_size, args.generation_batch_size, args.max_new_tokens, args.limit, precision)
    log = TofuEvaluation(model, tokenizer, data, args.forget_split, settings, state.process_index,
                         state.num_processes).run()
    log["meta"].update(model=args.model, adapter=args.adapter, data=args.data)
    summary, notes = summarize(log, retain_log)
    if not state.is_main_process:
        return
    write_outputs(out, log, summary, notes)
    print(format_table(summary))
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {out / 'TOFU_EVAL.json'} and {out / 'TOFU_SUMMARY.json'} "
          f"({log['meta']['wall_seconds']:.0f} s, peak memory {log['meta']['peak_memory_mb']:.0f} MB, {precision})")
