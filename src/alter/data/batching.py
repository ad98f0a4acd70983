"""Padding and batching. The attention mask always comes from sequence lengths, never from the pad id:
many chat models use their end-of-turn token as pad (SmolLM2's `<|im_end|>` is pad, EOS and part of every prompt)."""

from __future__ import annotations

import torch

from alter.data.formatting import IGNORE_INDEX, EncodedQA


def collate(items: list[EncodedQA], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and answer-only labels, padded to the longest item on `side`."""
    width = max(len(item.input_ids) for item in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        span = slice(0, n) if side == "right" else slice(width - n, width)
        input_ids[row, span] = torch.tensor(item.input_ids)
        labels[row, span] = torch.tensor(item.labels)
        attention_mask[row, span] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), to waste little compute on padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
