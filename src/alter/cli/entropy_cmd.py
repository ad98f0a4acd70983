"""`alter entropy`: per-token entropies of a model on a split, and their histogram (is it bimodal?)."""

from __future__ import annotations

from alter.cli.options import add_precision, positive_float, positive_int


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "entropy", help="per-token entropy of a model on a split, with a histogram",
        description="Scores every answer token's entropy (of the frozen model's distribution that predicts it) and "
                    "writes ENTROPY.json (per-token values), ENTROPY_SUMMARY.json and entropy_histogram.png.")
    parser.add_argument("--model", required=True, help="model folder, 'smollm2' or a hub id")
    parser.add_argument("--data", required=True, help="TOFU-format folder or locuslab/TOFU")
    parser.add_argument("--split", default="forget10", help="split to score (default forget10)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--kind", default="tsallis", choices=("tsallis", "shannon"), help="entropy (default tsallis)")
    parser.add_argument("--q", type=positive_float, default=1.2, help="Tsallis q (default 1.2)")
    parser.add_argument("--threshold", type=float, default=1.2, help="high/low threshold (paper: 1.2)")
    parser.add_argument("--limit", type=positive_int, help="only the first N items")
    add_precision(parser)
    parser.set_defaults(run=run)


def run(args) -> None:
    from pathlib import Path

    import numpy as np

    from alter.data.formatting import encode_qa
    from alter.data.tofu import TofuData
    from alter.entropy import EntropySettings
    from alter.io import check_output_dir, write_json
    from alter.methods.alter.statistics import item_statistics
    from alter.models import default_device, load_model, resolve_precision
    from alter.report.plots import entropy_histogram

    out = check_output_dir(args.out)
    rows = TofuData(args.data).load(args.split)[: args.limit]
    device = default_device()
    precision = resolve_precision(args.precision, device, args.model)
    model, tokenizer = load_model(args.model)
    model.to(device)
    items = [encode_qa(tokenizer, row["question"], row["answer"]) for row in rows]
    settings = EntropySettings(kind=args.kind, q=args.q, threshold=args.threshold)
    entropies = item_statistics(model, items, tokenizer.pad_token_id, precision, settings).entropy
    per_item, values = {}, []
    for index, (item, entropy) in enumerate(zip(items, entropies)):
        answer = entropy[item.prompt_length - 1 : -1].tolist()  # the positions that predict each answer token
        tokens = tokenizer.convert_ids_to_tokens(item.answer_ids)
        per_item[str(index)] = {"question": rows[index]["question"], "tokens": tokens, "entropy": answer}
        values.extend(answer)
    values = np.array(values)
    summary = {"model": args.model, "split": args.split, "kind": args.kind, "q": args.q, "threshold": args.threshold,
               "precision": precision, "tokens": int(len(values)),
               "high_fraction": float((values > args.threshold).mean()),
               "quantiles": {str(q): float(np.quantile(values, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)}}
    write_json(out / "ENTROPY.json", per_item)
    write_json(out / "ENTROPY_SUMMARY.json", summary)
    entropy_histogram(values, args.threshold, f"{args.kind} entropy (q={args.q}) of {args.split} answer tokens",
                      Path(out) / "entropy_histogram.png")
    print(f"{len(values)} answer tokens, {summary['high_fraction']:.1%} above {args.threshold}; wrote {out}")
