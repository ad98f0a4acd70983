"""`alter finetune`: the TOFU target (split full) and retain (split retainXX) models with one recipe."""

from __future__ import annotations

import argparse

from alter.cli.options import add_precision, add_run_options, non_negative_int, positive_float, positive_int


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "finetune", help="fine-tune a model on TOFU-format data (target or retain model)",
        description="Fine-tune on answer tokens only. Build the target model with --split full and the retain "
                    "model with --split retain90 (same recipe, as the TOFU protocol requires). Defaults depend on "
                    "the model: tiny = 20 epochs at lr 2e-3; pretrained = 5 epochs at lr 5e-5 (LoRA: 1e-3).")
    parser.add_argument("--model", required=True, help="'tiny', 'smollm2', a local model folder or a hub id")
    parser.add_argument("--data", required=True, help="TOFU-format folder (e.g. from `alter world tofu`) or locuslab/TOFU")
    parser.add_argument("--split", default="full", help="training split: full (target) or retain90/95/99 (retain)")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters (merged into the weights on save)")
    parser.add_argument("--lora-rank", type=positive_int, default=16, help="LoRA rank (default 16)")
    parser.add_argument("--general-knowledge", action=argparse.BooleanOptionalAction, default=None,
                        help="also train on real_authors and world_facts, what model_utility reads (default: on for "
                             "'tiny', which starts from random weights and knows no facts; off for pretrained models)")
    parser.add_argument("--epochs", type=positive_float, help="epochs over the split (overrides the model's default)")
    parser.add_argument("--lr", type=positive_float, help="peak learning rate (linear warm-up and decay)")
    parser.add_argument("--batch-size", type=positive_int, help="items per batch and process")
    parser.add_argument("--max-steps", type=positive_int, help="stop after this many optimizer steps (quick runs)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed for initialisation and data order")
    add_precision(parser)
    parser.add_argument("--checkpoint-every", type=positive_int, default=100, help="optimizer steps between checkpoints")
    parser.add_argument("--out", required=True, help="output folder: safetensors model, tokenizer, manifest.json")
    add_run_options(parser)
    parser.set_defaults(run=run)


def run(args) -> None:
    from dataclasses import replace

    from accelerate import PartialState

    from alter.models.precision import check_precision
    from alter.training.finetune import default_recipe, finetune

    check_precision(args.precision)
    recipe = default_recipe(args.model, args.lora)
    overrides = {"epochs": args.epochs, "learning_rate": args.lr, "batch_size": args.batch_size,
                 "max_steps": args.max_steps}
    train = replace(recipe.train, seed=args.seed, precision=args.precision, checkpoint_every=args.checkpoint_every,
                    **{k: v for k, v in overrides.items() if v is not None})
    recipe = replace(recipe, train=train, lora_rank=args.lora_rank)
    if args.general_knowledge is not None:
        recipe = replace(recipe, general_knowledge=args.general_knowledge)
    manifest = finetune(args.model, args.data, args.split, args.out, recipe, resume=args.resume,
                        overwrite=args.overwrite, trust_remote_code=args.trust_remote_code)
    if not PartialState().is_main_process:  # every rank returns the manifest; one reports it
        return
    print(f"saved {args.out}: {manifest['steps']} steps, final loss {manifest['loss_curve'][-1]['loss']:.4f}, "
          f"{manifest['wall_seconds']:.1f} s, {manifest['tokens_per_second']:.0f} tokens/s, "
          f"peak memory {manifest['peak_memory_mb']:.0f} MB, {manifest['precision']}")
