"""Batched greedy generation: left padding, KV cache, each sequence stops at its own EOS."""

from __future__ import annotations

import torch

from alter.data.batching import length_sorted_batches
from alter.models.precision import autocast


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 200, batch_size: int = 16,
                    precision: str = "fp32", progress=None) -> list[str]:
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    outputs: list[str | None] = [None] * len(prompts)
    for indices in length_sorted_batches([len(p) for p in prompts], batch_size):
        width = max(len(prompts[i]) for i in indices)
        input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, index in enumerate(indices):
            n = len(prompts[index])
            input_ids[row, width - n :] = torch.tensor(prompts[index])
            attention_mask[row, width - n :] = 1
        with autocast(precision, device):
            generated = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_id,
                eos_token_id=eos, use_cache=True,
            )
        for row, index in enumerate(indices):
            outputs[index] = tokenizer.decode(generated[row, width:], skip_special_tokens=True).strip()
        if progress is not None:
            progress.update(len(indices))
    return outputs  # type: ignore[return-value]
