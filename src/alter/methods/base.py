"""The one protocol every unlearning method follows, and what the objectives share.

A method turns a `Setup` (the target model, the encoded forget/retain/refusal items, the batch source, its
hyperparameters) into a `Plan`: the model the loop trains, a list of `Phase`s (parameter groups with their learning
rates, an objective, an epoch count) and how to save the result. `alter.training.unlearn` runs any plan on the one
loop, so fine-tuning, the baselines and ALTER share everything but their objectives.

An objective sees a batch `{"forget": ..., "retain": ..., "idk": ...}` (each a right-padded, answer-labelled batch;
`idk` pairs the forget questions with refusal answers) and returns `(loss, logs)`.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from alter.adapters.lora import attach_lora
from alter.data.batching import WIDTH_MULTIPLE
from alter.data.formatting import IGNORE_INDEX, EncodedQA
from alter.methods.losses import masked_kl
from alter.models.outputs import logits_at
from alter.models.precision import hold_frozen_linears_in_compute_dtype

Objective = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class LoraChoice:
    enabled: bool = False
    rank: int = 8
    alpha: int = 16


@dataclass
class Setup:
    model: torch.nn.Module
    tokenizer: Any
    forget: list[EncodedQA]
    retain: list[EncodedQA]
    idk: list[EncodedQA] | None
    source: Any  # the batch source (alter.data.batching.UnlearnBatches)
    params: Any  # the method's hyperparameter dataclass
    learning_rate: float
    seed: int
    precision: str
    lora: LoraChoice = field(default_factory=LoraChoice)
    sharded: bool = False  # FSDP or DeepSpeed shard the model across processes
    fit_retain: list[int] | None = None  # retain items a method may fit on (not the evaluation's), None = all
    base_model: str = ""
    item_groups: list[int] | None = None  # forget items' subjects (e.g. TOFU authors), for diagnostics
    variants: int = 1  # items are rows in this many contexts each, row-major (data/contexts.py)
    unseen: list[EncodedQA] = field(default_factory=list)  # rows the model never saw, in the default format
    retain_turns: list[tuple[str, str]] = field(default_factory=list)  # each retain row's (question, answer), if any
    # (pool, copies per row) -> the forget rows, as (question, answer), with a name part changed (data/subjects.py)
    name_swaps: Callable[[str, int], list[tuple[str, str]]] = field(default=lambda pool, copies: [])
    renamed: list[EncodedQA | None] = field(default_factory=list)  # per forget item: its subject renamed (subjects.py)
    plain: dict[str, list[bool]] = field(default_factory=dict)  # per "forget"/"retain" item: in the plain format
    subjects: list[str] = field(default_factory=list)  # the forget subjects' names the rows use (data/subjects.py)


@dataclass
class Phase:
    name: str
    objective: Objective
    param_groups: list[dict]  # [{"params": [...], "lr": ...}]
    epochs: float | None = None  # None: the recipe's train.epochs


@dataclass
class Plan:
    model: torch.nn.Module
    phases: list[Phase]
    output: str  # "model" (a full model folder) or "adapter"
    save: Callable[[Path], None]
    facts: dict = field(default_factory=dict)  # recorded in the manifest


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    params: type  # dataclass of hyperparameters, defaults from the literature
    prepare: Callable[[Setup], Plan]
    needs_retain: bool = True
    needs_idk: bool = False
    uses_lora: bool = True  # honours the recipe's `lora` section (else setting it is refused)
    uses_learning_rate: bool = True  # honours train.learning_rate (else the params hold the rates)
    sparse_gradients: bool = False  # some parameters get no gradient in some steps (DDP must not wait for them)
    train_defaults: dict = field(default_factory=dict)  # the method's own defaults for the `train` section


def loss_method(name: str, summary: str, params: type, loss: Callable, needs_reference: bool = False,
                trainable: Callable | None = None, **options) -> Method:
    """A method defined by one loss `(model, batch, params, reference) -> (loss, logs)`, trained in one phase on all
    weights, on the weights `trainable(model, params)` picks (None: all), or, with the recipe's LoRA, on a peft
    adapter."""
    return Method(name, summary, params, partial(_prepare_loss, loss, needs_reference, trainable), **options)


def _prepare_loss(loss: Callable, needs_reference: bool, pick: Callable | None, setup: Setup) -> Plan:
    model = setup.model
    if setup.lora.enabled:
        model = attach_lora(model, setup.lora.rank, setup.lora.alpha)
    reference = None
    if needs_reference or getattr(setup.params, "retain_loss", "nll") == "kl":
        reference = Reference(model, adapter_based=setup.lora.enabled, precision=setup.precision)
    chosen = pick(model, setup.params) if pick is not None and not setup.lora.enabled else None
    trainable = chosen or [p for p in model.parameters() if p.requires_grad]
    phase = Phase("unlearn", lambda m, b: loss(m, b, setup.params, reference),
                  [{"params": trainable, "lr": setup.learning_rate}])

    def save(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        if not setup.lora.enabled:
            setup.tokenizer.save_pretrained(folder)

    copy_mb = round((reference.parameter_bytes() if reference else 0) / 2**20, 1)
    return Plan(model, [phase], "adapter" if setup.lora.enabled else "model", save, {"reference_copy_mb": copy_mb})


class Reference:
    """The frozen starting model. With adapters it is the base with adapters disabled (no second copy in memory);
    with full fine-tuning it is a frozen deep copy made once, whose memory shows in the manifest. The copy runs only
    under the loop's autocast, so its Linear weights are held in the compute dtype (the same outputs, bit for bit)."""

    def __init__(self, model: torch.nn.Module, adapter_based: bool, precision: str = "fp32"):
        self.adapter_based = adapter_based
        self.copy = None
        if not adapter_based:
            self.copy = copy.deepcopy(model).eval()
            self.copy.requires_grad_(False)
            hold_frozen_linears_in_compute_dtype(self.copy, precision, trainable=set())

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
    """The first position in the batch whose next token is an answer token, rounded down to a multiple of
    `WIDTH_MULTIPLE`: the output layer runs from there on, and so takes as few shapes as padded batches do (in fp32,
    whose batches are not padded, it reads up to 15 prompt positions more than it needs)."""
    labelled = labels != IGNORE_INDEX
    first = labelled.int().argmax(1)[labelled.any(1)]
    start = max(int(first.min()) - 1, 0) if len(first) else 0
    return start - start % WIDTH_MULTIPLE


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
    return masked_kl(ref_logits, logits, mask)


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
