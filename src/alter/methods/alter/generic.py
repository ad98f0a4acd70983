"""Forgetting toward what the target says of a subject it never saw (`params.forget_loss=generic`).

Eldan and Russinovich ("Who's Harry Potter?", 2023) fine-tune toward a model's "generic" predictions, obtained by
replacing the text's anchor terms. Here each forget item is asked again with its subject's name replaced by an
invented one (`data/subjects.py::renamed_forget_rows`), in the same context, and the frozen target's next-token
logits there, each lowered by `generic_alpha` times what the real name raises it by (their formula), are the forget
heads' target (KL) at every answer position the two texts share. Where the answer is template (words every author's
answer has), the real name raises nothing and the target's own distribution stays; where it is the subject's fact,
the target is pushed toward its guess for a stranger and below it. No retain model is read.

What the target guesses for a stranger is not what a model that never saw the subject says: on SmolLM2's world 15
its answer-token NLL at the shared positions is 0.33 (target 0.19, retain model 0.83), so with alpha 0 the forgetting
stops halfway; alpha 1.5 matched the retain model's mean there (docs/method.md, "Generic targets").
"""

from __future__ import annotations

import difflib

import torch

from alter.data.batching import pad_rows
from alter.data.formatting import IGNORE_INDEX, EncodedQA
from alter.methods.base import first_answer_position


def aligned_positions(original: list[int], renamed: list[int]) -> list[int]:
    """Per position t of `original`, the position in `renamed` that predicts the same next token after the same
    text up to the name (t and t + 1 inside one run of tokens both share), or -1."""
    matcher = difflib.SequenceMatcher(None, original, renamed, autojunk=False)
    positions = [-1] * len(original)
    for start, renamed_start, size in matcher.get_matching_blocks():
        for offset in range(size - 1):
            positions[start + offset] = renamed_start + offset
    return positions


class GenericTargets:
    """The frozen target's logits on the renamed items, laid out at the forget items' positions."""

    def __init__(self, forget: list[EncodedQA], renamed: list[EncodedQA | None]):
        self.items = [item or own for item, own in zip(renamed, forget)]
        self.positions = [aligned_positions(own.input_ids, item.input_ids) if item else [-1] * len(own.input_ids)
                          for item, own in zip(renamed, forget)]

    @property
    def rows_renamed(self) -> int:
        return sum(any(p >= 0 for p in positions) for positions in self.positions)

    def logits(self, frozen_output, index: torch.Tensor, start: int, width: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """([rows, width - start, vocab] logits, [rows, width - start] where a position has a target) for the
        forget items `index` of a batch on `device` whose logits begin at position `start`. `frozen_output(batch,
        keep)` runs the frozen target on a batch and returns its logits at positions `keep`."""
        rows = index.tolist()
        batch = {"input_ids": pad_rows([torch.tensor(self.items[i].input_ids) for i in rows], 0).to(device),
                 "attention_mask": pad_rows([torch.ones(len(self.items[i].input_ids), dtype=torch.long)
                                             for i in rows], 0).to(device),
                 "labels": pad_rows([torch.tensor(self.items[i].labels) for i in rows], IGNORE_INDEX).to(device)}
        renamed_start = first_answer_position(batch["labels"])
        keep = torch.arange(renamed_start, batch["input_ids"].shape[1], device=device)
        logits = frozen_output(batch, keep)
        where = torch.full((len(rows), width - start), -1, dtype=torch.long)
        for row, i in enumerate(rows):
            positions = torch.tensor(self.positions[i][start:width], dtype=torch.long)
            where[row, : len(positions)] = torch.where(positions >= renamed_start, positions - renamed_start, -1)
        where = where.to(device)
        has = where >= 0
        gathered = logits[torch.arange(len(rows), device=device)[:, None], where.clamp_min(0)]
        return gathered, has


def lowered_by_the_name(renamed: torch.Tensor, real: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eldan and Russinovich's generic logits: the renamed question's logits, each lowered by `alpha` times what the
    real name raises it by (`params.generic_alpha`; 0: the renamed question's logits as they are)."""
    if not alpha:
        return renamed
    return renamed.float() - alpha * torch.relu(real.float() - renamed.float())
