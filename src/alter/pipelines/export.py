"""`alter export`: a plain Hugging Face model that behaves like the unlearned model and contains no removable
adapter over the original weights (docs/audit.md, "Threat model").

- A peft LoRA adapter, or an ALTER adapter whose forget heads act without a gate (`router: none`), is folded into
  the weights exactly: W = W0 + s (B_r + sum_d B_fd) A.
- An ALTER adapter with a gate routes per token, which no single weight matrix reproduces: the export is distilled.
  A copy of the base (the student) learns the adapted model's next-token distributions (KL, teacher = base +
  adapter) on forget, retain and general-knowledge questions with their answers and with the teacher's own
  greedy answers. The manifest records how closely it follows the teacher (`fidelity`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alter.adapters.loading import attach_adapter
from alter.adapters.model import is_alter_adapter
from alter.data.batching import QABatches, width_multiple
from alter.data.formatting import encode_prompt, encode_qa
from alter.data.splits import retain_split_for
from alter.data.tofu import TofuData
from alter.errors import UserError
from alter.evaluation.generation import greedy_generate
from alter.evaluation.scoring import score_answers
from alter.methods.base import answer_logits
from alter.methods.losses import masked_kl
from alter.models import default_device, load_model
from alter.models.precision import machine_facts
from alter.resources import library_versions
from alter.training.finetune import make_accelerator, prepare_output, save_model_folder
from alter.training.loop import TrainConfig, train

GENERAL = ("real_authors_perturbed", "world_facts_perturbed")


@dataclass
class ExportPlan:
    model: str
    adapter: str
    out: str
    data: str | None = None  # for distillation: forget, retain and general questions
    forget_split: str = "forget10"
    epochs: float = 3.0
    learning_rate: float = 2e-5
    batch_size: int = 8
    retain_items: int = 400
    precision: str = "fp32"
    overwrite: bool = False


def export(plan: ExportPlan) -> dict:
    out = prepare_output(plan.out, resume=False, overwrite=plan.overwrite)
    started = time.time()
    folder = Path(plan.adapter)
    model, tokenizer = load_model(plan.model)
    adapted = attach_adapter(model, folder)
    if not is_alter_adapter(folder):
        student, how, facts = adapted.merge_and_unload(), "merged peft LoRA", {}
    elif adapted.alter.config.router == "none":
        student, how, facts = fold(adapted), "folded ungated ALTER heads", {}
    else:
        if plan.data is None:
            raise UserError("--data is required: a gated ALTER adapter is exported by distillation on its questions")
        student, facts = distil(adapted, tokenizer, plan)
        how = "distilled from the gated ALTER adapter"
    manifest = {"kind": "export", "status": "complete", "method": how, "base_model": plan.model,
                "adapter": str(folder), "machine": machine_facts(default_device(), plan.precision),
                "versions": library_versions(), "wall_seconds": round(time.time() - started, 1), **facts}
    save_model_folder(student, tokenizer, out, manifest)
    return manifest


@torch.no_grad()
def fold(model) -> torch.nn.Module:
    """Fold an ungated ALTER adapter into its base layers and remove it: the result is the plain base class."""
    adapter = model.alter
    for name, layer in adapter.layers:
        delta = adapter.config.scale * (layer.retain_B + layer.forget_B.sum(0)) @ layer.lora_A  # [out, in]
        weight = layer.base.weight
        weight += (delta.T if type(layer.base).__name__ == "Conv1D" else delta).to(weight.dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.base)
    _clear_hooks(model)
    del model.alter
    return model


def _clear_hooks(model) -> None:
    for module in model.modules():
        module._forward_pre_hooks.clear()
        module._forward_hooks.clear()


def distil(teacher, tokenizer, plan: ExportPlan) -> tuple[torch.nn.Module, dict]:
    data = TofuData(plan.data)
    rows = data.load(plan.forget_split) + data.load(retain_split_for(plan.forget_split))[: plan.retain_items]
    rows += [row for split in GENERAL if data.has(split) for row in data.load(split)]
    device = default_device()
    teacher.to(device).eval()
    prompts = [encode_prompt(tokenizer, row["question"]) for row in rows]
    answers = greedy_generate(teacher, tokenizer, prompts, max_new_tokens=64, precision=plan.precision)
    items = [encode_qa(tokenizer, row["question"], row["answer"]) for row in rows]
    items += [encode_qa(tokenizer, row["question"], answer) for row, answer in zip(rows, answers) if answer]
    student, _ = load_model(plan.model)
    student.to(device)

    def objective(model, batch):
        logits, _, mask = answer_logits(model, batch)
        with torch.no_grad():
            reference, _, _ = answer_logits(teacher, batch)
        loss = masked_kl(reference, logits, mask)
        return loss, {"kl": loss.item()}

    config = TrainConfig(epochs=plan.epochs, learning_rate=plan.learning_rate, batch_size=plan.batch_size,
                         precision=plan.precision)
    source = QABatches(items, config.batch_size, config.seed, tokenizer.pad_token_id,
                       multiple=width_multiple(plan.precision))
    result = train(student, objective, source, config, make_accelerator(plan.precision), description="distil")
    forget_items = [encode_qa(tokenizer, r["question"], r["answer"]) for r in data.load(plan.forget_split)]
    retain_items = [encode_qa(tokenizer, r["question"], r["answer"]) for r in data.load("retain_perturbed")]
    fidelity = {}
    for name, group in (("forget", forget_items), ("retain", retain_items)):
        ours = [np.exp(-s.nll) for s in score_answers(student, group, tokenizer.pad_token_id, precision=plan.precision)]
        theirs = [np.exp(-s.nll) for s in score_answers(teacher, group, tokenizer.pad_token_id, precision=plan.precision)]
        fidelity[f"{name}_prob"] = {"export": float(np.mean(ours)), "adapted": float(np.mean(theirs)),
                                    "mean_abs_difference": float(np.mean(np.abs(np.array(ours) - np.array(theirs))))}
    return student, {"distillation": {"items": len(items), **result.summary(), "fidelity": fidelity}}
