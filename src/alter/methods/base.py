"""What every unlearning objective shares: the method record, the reference model, sequence log-likelihoods.

An objective sees a batch `{"forget": ..., "retain": ..., "idk": ...}` (each a right-padded, answer-labelled
batch; `idk` pairs the forget questions with refusal answers) and returns `(loss, logs)`.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from alter.data.formatting import IGNORE_INDEX
from alter.models.outputs import logits_at


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    params: type  # dataclass of hyperparameters, defaults from the literature
    loss: Callable  # (model, batch, params, reference) -> (loss, logs)
    needs_reference: bool = False
    needs_retain: bool = True
    needs_idk: bool = False
    train_defaults: dict = field(default_factory=dict)  # the method's own defaults for the `train` section
    runner: Callable | None = None  # methods with their own training plan (ALTER) run this instead of `loss`


class Reference:
    """The frozen starting model. With adapters it is the base with adapters disabled (no second copy in memory);
    with full fine-tuning it is a frozen deep copy made once, whose memory shows in the manifest."""

    def __init__(self, model: torch.nn.Module, adapter_based: bool):
        self.adapter_based = adapter_based
        self.copy = None
        if not adapter_based:
            self.copy = copy.deepcopy(model).eval()
            self.copy.requires_grad_(False)

    def parameter_bytes(self) -> int:
        if self.copy is None:
            return 0
        return sum(p.numel() * p.element_size() for p in self.copy.parameters())

    @torch.no_grad()
    def forward(self, model: torch.nn.Module, batch: dict, **kwargs):
        if self.adapter_based:
            unwrapped = getattr(model, "module", model)
            with unwrapped.disable_adapter() if hasattr(unwrapped, "disable_adapter") else nullcontext():
                return unwrapped(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
        return self.copy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)


def forward(model: torch.nn.Module, batch: dict, **kwargs):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)


def first_answer_position(labels: torch.Tensor) -> int:
    """The first position in the batch whose next token is an answer token."""
    labelled = labels != IGNORE_INDEX
    first = labelled.int().argmax(1)[labelled.any(1)]
    return max(int(first.min()) - 1, 0) if len(first) else 0


def answer_logits(model: torch.nn.Module, batch: dict, reference: Reference | None = None):
    """The logits that predict each answer token (float), the targets, and the answer-token mask; of the reference
    model when `reference` is given. Only positions from the batch's first answer on run the vocabulary-sized output
    layer: prompts are most of a TOFU item, so this made a SmolLM2 training step about 40% faster."""
    labels = batch["labels"]
    start = first_answer_position(labels)
    keep = torch.arange(start, labels.shape[1] - 1, device=labels.device)
    run = reference.forward if reference is not None else forward
    logits = logits_at(lambda **extra: run(model, batch, **extra), model, keep)
    targets = labels[:, start + 1 :]
    mask = targets != IGNORE_INDEX
    return logits.float(), targets.masked_fill(~mask, 0), mask


def sequence_nll(model: torch.nn.Module, batch: dict, reference: Reference | None = None):
    """Per sequence: the summed answer NLL and the number of answer tokens."""
    logits, targets, mask = answer_logits(model, batch, reference)
    token_nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none") * mask
    return token_nll.sum(-1), mask.sum(-1)


def mean_nll(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Token-averaged answer NLL over the batch (the fine-tuning loss)."""
    total, count = sequence_nll(model, batch)
    return total.sum() / count.sum().clamp_min(1)


def kl_to_reference(model: torch.nn.Module, batch: dict, reference: Reference) -> torch.Tensor:
    """KL(p_reference || p_model) averaged over answer tokens."""
    logits, _, mask = answer_logits(model, batch)
    ref_logits, _, _ = answer_logits(model, batch, reference)
    model_logp, ref_logp = F.log_softmax(logits, -1), F.log_softmax(ref_logits, -1)
    token_kl = (ref_logp.exp() * (ref_logp - model_logp)).sum(-1)
    return (token_kl * mask).sum() / mask.sum().clamp_min(1)


def retain_loss(model: torch.nn.Module, batch: dict, kind: str, reference: Reference | None) -> torch.Tensor:
    if kind == "nll":
        return mean_nll(model, batch["retain"])
    if kind == "kl":
        return kl_to_reference(model, batch["retain"], reference)
    raise ValueError(f"retain_loss must be 'nll' or 'kl', got {kind!r}")


def combine(forget: torch.Tensor, retain: torch.Tensor | None, gamma: float, alpha: float):
    """gamma * forget + alpha * retain, with both parts logged."""
    logs = {"forget_loss": forget.item()}
    loss = gamma * forget
    if retain is not None:
        logs["retain_loss"] = retain.item()
        loss = loss + alpha * retain
    return loss, logs


def with_retain(forget: torch.Tensor, model: torch.nn.Module, batch: dict, params, reference: Reference | None):
    """The common form gamma * forget + alpha * L_retain, for params with gamma, alpha and retain_loss."""
    return combine(forget, retain_loss(model, batch, params.retain_loss, reference), params.gamma, params.alpha)


def dpo_log_ratio(model: torch.nn.Module, batch: dict, reference: Reference) -> torch.Tensor:
    """Per sequence: log p_model(a|q) - log p_reference(a|q), summed over answer tokens."""
    model_nll, _ = sequence_nll(model, batch)
    ref_nll, _ = sequence_nll(model, batch, reference)
    return ref_nll - model_nll
