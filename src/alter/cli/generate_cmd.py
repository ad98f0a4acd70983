"""`alter generate`: greedy answers from a model, optionally with an adapter (peft LoRA or ALTER)."""

from __future__ import annotations

from alter.cli.options import add_precision, positive_int


def add_parser(commands) -> None:
    parser = commands.add_parser("generate", help="answer prompts with a model (and adapter)",
                                 description="Greedy answers to each PROMPT, formatted as a question (chat template "
                                             "or `Question: ...`).")
    parser.add_argument("prompts", nargs="+", metavar="PROMPT", help="questions to answer")
    parser.add_argument("--model", required=True, help="model folder, 'smollm2' or a hub id")
    parser.add_argument("--adapter", help="adapter folder (peft LoRA or ALTER) to apply")
    parser.add_argument("--max-new-tokens", type=positive_int, default=100, help="generation length cap (default 100)")
    add_precision(parser)
    parser.add_argument("--trust-remote-code", action="store_true", help="allow models that ship their own code")
    parser.set_defaults(run=run)


def run(args) -> None:
    from alter.adapters.loading import load_model_with_adapter
    from alter.data.formatting import encode_prompt
    from alter.evaluation.generation import greedy_generate
    from alter.models import default_device, resolve_precision

    device = default_device()
    precision = resolve_precision(args.precision, device, args.model)
    model, tokenizer = load_model_with_adapter(args.model, args.adapter, trust_remote_code=args.trust_remote_code)
    model.to(device)
    prompts = [encode_prompt(tokenizer, prompt) for prompt in args.prompts]
    answers = greedy_generate(model, tokenizer, prompts, args.max_new_tokens, len(prompts), precision)
    for prompt, answer in zip(args.prompts, answers):
        print(f"Q: {prompt}\nA: {answer}\n")
