"""Batched greedy generation: left padding, KV cache, and each sequence leaves the batch at its own EOS.

`model.generate` keeps finished sequences in the batch until the longest one ends, so one rambling answer makes
every row of its batch decode up to the cap. This loop drops a row from the batch (and from the KV cache) as soon
as it emits EOS; the tokens it produces are the same as `generate`'s greedy search without logits processors
(tested against it).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from alter.data.batching import length_sorted_batches, pad_sequences
from alter.models.outputs import last_logit_only
from alter.models.precision import autocast


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 200, batch_size: int = 16,
                    precision: str = "fp32", progress=None) -> list[str]:
    device = next(model.parameters()).device
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos], device=device)
    outputs: list[str | None] = [None] * len(prompts)
    for indices in length_sorted_batches([len(p) for p in prompts], batch_size):
        input_ids, attention_mask = pad_sequences([prompts[i] for i in indices], tokenizer.pad_token_id, "left")
        with autocast(precision, device):
            tokens = decode_batch(model, input_ids.to(device), attention_mask.to(device), eos_ids, max_new_tokens)
        for index, row in zip(indices, tokens):
            outputs[index] = tokenizer.decode(row, skip_special_tokens=True).strip()
        if progress is not None:
            progress.update(len(indices))
    return outputs  # type: ignore[return-value]


def decode_batch(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, eos_ids: torch.Tensor,
                 max_new_tokens: int) -> list[list[int]]:
    """Greedy continuation of each left-padded row, EOS included, at most `max_new_tokens` tokens."""
    runtime = getattr(model, "alter", None)
    generated: list[list[int]] = [[] for _ in range(len(input_ids))]
    live = torch.arange(len(input_ids))  # the original row of each row still decoding
    cache = DynamicCache(config=model.config)
    positions = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    step_input = {"input_ids": input_ids, "position_ids": positions}
    last_only = last_logit_only(model)
    for step in range(max_new_tokens):
        logits = model(**step_input, attention_mask=attention_mask, cache=cache, use_cache=True, **last_only).logits
        next_tokens = logits[:, -1].argmax(-1)
        for row, token in zip(live.tolist(), next_tokens.tolist()):
            generated[row].append(token)
        going = ~torch.isin(next_tokens, eos_ids)
        if step == max_new_tokens - 1 or not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            if runtime is not None:
                runtime.keep_rows(keep)
            live, next_tokens = live[keep.cpu()], next_tokens[keep]
            attention_mask, positions = attention_mask[keep], positions[keep]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(attention_mask), 1)], dim=1)
        positions = positions[:, -1:] + 1
        step_input = {"input_ids": next_tokens[:, None], "position_ids": positions}
    return generated
