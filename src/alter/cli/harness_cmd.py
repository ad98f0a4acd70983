"""`alter harness`: real WMDP / MMLU through lm-evaluation-harness (optional extra `alter[lmeval]`)."""

from __future__ import annotations

from alter.cli.options import positive_int


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "harness", help="run lm-evaluation-harness tasks (real WMDP, MMLU) on a model with its adapter",
        description="Zero-shot lm-evaluation-harness tasks on any model alter loads, with a peft LoRA or an ALTER "
                    "adapter on top; lm-eval's prompts and scoring decide. Needs `pip install 'alter[lmeval]'` and, "
                    "for hub tasks such as wmdp and mmlu, the hub (a GPU for the full sets). Writes OUT/HARNESS.json.")
    parser.add_argument("--model", required=True, help="model folder, 'smollm2' or a hub id")
    parser.add_argument("--adapter", help="adapter folder (peft LoRA or ALTER)")
    parser.add_argument("--tasks", default="wmdp,mmlu", help="comma-separated lm-eval tasks (default wmdp,mmlu)")
    parser.add_argument("--include-path", help="folder of extra lm-eval task YAMLs (e.g. local data)")
    parser.add_argument("--limit", type=positive_int, help="only the first N items of each task")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="weights' dtype (default fp32)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="sequences per forward (default 8)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow models that ship their own code")
    parser.set_defaults(run=run)


def run(args) -> None:
    from alter.evaluation.harness import run_harness
    from alter.io import check_output_dir

    out = check_output_dir(args.out)
    tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
    record = run_harness(args.model, args.adapter, tasks, out, args.limit, args.include_path, args.dtype,
                         args.batch_size, args.trust_remote_code)
    for task, values in record["results"].items():
        print(f"{task}: acc {values.get('acc,none', float('nan')):.4f}")
