"""Padding and batching. The attention mask always comes from sequence lengths, never from the pad id:
many chat models use their end-of-turn token as pad (SmolLM2's `<|im_end|>` is pad, EOS and part of every prompt)."""

from __future__ import annotations

import math

import torch

from alter.data.formatting import IGNORE_INDEX, EncodedQA
from alter.errors import UserError

WIDTH_MULTIPLE = 16
"""Under bf16/fp16, training and frozen-pass batches are right-padded to a multiple of this many tokens. PyTorch's
bf16 matmuls on the CPU run on oneDNN, which builds and keeps kernels for every matrix shape it meets: with batches
of every width, a SmolLM2 ALTER run's resident size grew by about 300 MB over training (docs/results.md, "ALTER's
unlearning cost"). The losses read answer positions only, so the padding changes what a step computes, not what it
learns (`pytest tests/test_methods.py tests/test_alter.py -k width_multiple`)."""


def width_multiple(precision: str) -> int:
    """What batches are padded to a multiple of under `precision` (a resolved one: fp32, bf16 or fp16). fp32
    matmuls on the CPU go to a BLAS that keeps no kernel per shape: there padding would only cost compute."""
    return WIDTH_MULTIPLE if precision in ("bf16", "fp16") else 1


def pad_rows(rows: list[torch.Tensor], fill, side: str = "right", multiple: int = 1) -> torch.Tensor:
    """Tensors of shape [n_i, width_i] (or [width_i]) stacked along the first axis, padded with `fill` on `side` to
    the widest, rounded up to a multiple of `multiple`."""
    rows = [row if row.dim() == 2 else row[None] for row in rows]
    width = math.ceil(max(row.shape[1] for row in rows) / multiple) * multiple
    padded = []
    for row in rows:
        filler = row.new_full((row.shape[0], width - row.shape[1]), fill)
        padded.append(torch.cat([row, filler] if side == "right" else [filler, row], dim=1))
    return torch.cat(padded)


def pad_sequences(sequences: list[list[int]], pad_value: int, side: str = "right",
                  multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The sequences padded on `side` to the longest (rounded up to `multiple`), and the mask of their real tokens."""
    tensors = [torch.tensor(sequence, dtype=torch.long) for sequence in sequences]
    return (pad_rows(tensors, pad_value, side, multiple),
            pad_rows([torch.ones_like(t) for t in tensors], 0, side, multiple))


def collate(items: list[EncodedQA], pad_id: int, side: str = "right", multiple: int = 1) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and answer-only labels, padded on `side` to the longest item (rounded up to a
    multiple of `multiple`: `width_multiple(precision)` for training and frozen passes)."""
    input_ids, attention_mask = pad_sequences([item.input_ids for item in items], pad_id, side, multiple)
    labels, _ = pad_sequences([item.labels for item in items], IGNORE_INDEX, side, multiple)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), to waste little compute on padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class QABatches:
    """Shuffled answer-labelled batches, a pure function of (seed, epoch, index); ranks take disjoint rows."""

    def __init__(self, items: list[EncodedQA], batch_size: int, seed: int, pad_id: int, rank: int = 0, world: int = 1,
                 multiple: int = 1):
        if not items:
            raise UserError("no training items")
        self.items, self.batch_size, self.seed, self.pad_id = items, batch_size, seed, pad_id
        self.rank, self.world, self.multiple = rank, world, multiple

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.items) / (self.batch_size * self.world))

    def indices(self, epoch: int, index: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.items), generator=generator).tolist()
        span = self.batch_size * self.world
        positions = range(index * span + self.rank, (index + 1) * span, self.world)
        return [order[p % len(order)] for p in positions]

    def batch(self, epoch: int, index: int) -> dict:
        return collate([self.items[i] for i in self.indices(epoch, index)], self.pad_id, multiple=self.multiple)


class UnlearnBatches:
    """Forget batches in shuffled order, each paired with refusal answers to the same questions and with retain
    items sampled at random; the retain sampler is seeded per (rank, epoch, index), so ranks see different rows.

    With `variants` > 1, the forget items are the rows' encodings in several contexts, row-major (row r's at
    r * variants + v): an epoch goes over the rows once, each in one of its contexts, chosen per (seed, epoch, row).
    `idk` stays one item per row. Every part is padded to a multiple of `multiple` tokens (`width_multiple`)."""

    def __init__(self, forget: list[EncodedQA], retain: list[EncodedQA], idk: list[EncodedQA] | None,
                 batch_size: int, seed: int, pad_id: int, rank: int = 0, world: int = 1, variants: int = 1,
                 multiple: int = 1):
        self.variants, self.multiple = variants, multiple
        self.forget = QABatches(forget[::variants] if variants > 1 else forget, batch_size, seed, pad_id, rank, world)
        self.forget_items = forget
        self.retain, self.idk, self.pad_id = retain, idk, pad_id
        self.seed, self.rank, self.batch_size = seed, rank, batch_size

    def batches_per_epoch(self) -> int:
        return self.forget.batches_per_epoch()

    def retain_indices(self, epoch: int, index: int) -> list[int]:
        generator = torch.Generator().manual_seed(hash((self.seed, self.rank, epoch, index)) % 2**62)
        return torch.randint(len(self.retain), (self.batch_size,), generator=generator).tolist()

    def forget_indices(self, epoch: int, index: int) -> tuple[list[int], list[int]]:
        """The rows of this batch and the item (row, in one of its contexts) that represents each."""
        rows = self.forget.indices(epoch, index)
        if self.variants == 1:
            return rows, rows
        generator = torch.Generator().manual_seed(self.seed * 7919 + epoch * 104729 + index)
        choice = torch.randint(self.variants, (len(rows),), generator=generator).tolist()
        return rows, [row * self.variants + v for row, v in zip(rows, choice)]

    def batch(self, epoch: int, index: int) -> dict:
        rows, chosen = self.forget_indices(epoch, index)
        batch = {"forget": collate([self.forget_items[i] for i in chosen], self.pad_id, multiple=self.multiple),
                 "forget_index": torch.tensor(chosen)}
        if self.retain:
            retained = self.retain_indices(epoch, index)
            batch["retain"] = collate([self.retain[i] for i in retained], self.pad_id, multiple=self.multiple)
            batch["retain_index"] = torch.tensor(retained)
        if self.idk:
            batch["idk"] = collate([self.idk[i] for i in rows], self.pad_id, multiple=self.multiple)
        return batch
