"""`alter audit`: attacks that change the model, applied to an unlearned model and, under the same attack, to the
target and the retain model (docs/audit.md).

- **relearning** (after Hu et al., 2024): fine-tune on one part of the forget set (its first half of subjects, e.g.
  authors) for a fixed small budget at each learning rate, then measure the other part. The retain model under the
  same budget shows what the relearning data itself teaches; anything beyond that was hidden, not forgotten. An
  adapter output is fine-tuned in its base weights with the adapter attached.
- **quantisation** (Zhang et al., ICLR 2025): 8 and 4 bits, round-to-nearest, per output channel and per group of
  128, simulated in fp32 (`models/quantize.py`); an adapter output keeps its adapter and has its base quantised.
- **adapter removal**: the base without the adapter, for adapter outputs.

Each attack records the forget-side metrics (answer probability, greedy ROUGE-L recall) of the attacked models, a
retain control, and "undone": (model - retain) / (target - retain) of the forget answer probability, all three
models under the same attack (0 = as forgotten as the retain model, 1 = back to the target).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from alter.adapters.loading import attach_adapter
from alter.data.batching import QABatches, width_multiple
from alter.data.formatting import encode_prompt, encode_qa
from alter.data.sources import TOFU_QUESTIONS_PER_AUTHOR
from alter.data.tofu import TofuData
from alter.errors import UserError
from alter.evaluation.runner import DatasetSpec, EvalSettings, Generation, run_datasets
from alter.io import write_json, write_text
from alter.methods.base import mean_nll
from alter.metrics.rouge import rouge_l
from alter.models import default_device, load_model
from alter.models.precision import machine_facts
from alter.models.quantize import fake_quantise, is_adapter_part
from alter.training.finetune import make_accelerator
from alter.training.loop import TrainConfig, train

QUANTISATION = ((8, None), (4, None), (8, 128), (4, 128))


@dataclass
class AuditPlan:
    model: str
    adapter: str | None
    data: str
    out: Path
    forget_split: str = "forget10"
    reference: str | None = None  # the target model
    retain_model: str | None = None
    relearn_lrs: tuple[float, ...] = (1e-5, 1e-4)
    relearn_steps: int = 10
    relearn_batch: int = 4
    quantisation: tuple = QUANTISATION
    precision: str = "fp32"
    settings: dict = field(default_factory=dict)  # EvalSettings fields
    cache: Path | None = None  # reference models' measurements, shared by audits of the same target and retain


@dataclass
class Subject:
    name: str  # "model", "target" or "retain"
    model: str
    adapter: str | None = None


def attack_names(plan: AuditPlan) -> list[str]:
    names = ["none", *(f"relearn_lr{lr:g}" for lr in plan.relearn_lrs),
             *(f"quant_int{bits}_{'g' + str(group) if group else 'channel'}" for bits, group in plan.quantisation)]
    return names + (["adapter_removed"] if plan.adapter else [])


def split_forget(rows: list[dict], data: str) -> tuple[list[dict], list[dict]]:
    """The relearning part (the first half of the subjects) and the measured part (the rest)."""
    per_subject = TofuData.questions_per_author(data) if Path(data).is_dir() else TOFU_QUESTIONS_PER_AUTHOR
    subjects = max(1, len(rows) // per_subject)
    if subjects < 2:  # one subject: its first half of questions relearns, the second half is measured
        half = len(rows) // 2
        return rows[:half], rows[half:]
    cut = (subjects // 2) * per_subject
    return rows[:cut], rows[cut:]


def run_audit(plan: AuditPlan) -> dict:
    data = TofuData(plan.data)
    forget = data.load(plan.forget_split)
    relearn_rows, held_out = split_forget(forget, plan.data)
    sets = {"forget": forget, "held_out": held_out, "retain": data.load("retain_perturbed")}
    subjects = [Subject("model", plan.model, plan.adapter)]
    subjects += [Subject("target", plan.reference)] if plan.reference else []
    subjects += [Subject("retain", plan.retain_model)] if plan.retain_model else []
    started = time.perf_counter()
    results: dict[str, dict] = {}
    for attack in attack_names(plan):
        results[attack] = {}
        for subject in subjects:
            if attack == "adapter_removed" and subject.adapter is None:
                continue
            results[attack][subject.name] = _measured(plan, subject, attack, sets, relearn_rows)
        results[attack]["undone"] = _undone(results[attack], "held_out" if attack.startswith("relearn") else "forget")
    audit = {"meta": {"model": plan.model, "adapter": plan.adapter, "data": plan.data, "forget_split": plan.forget_split,
                      "reference": plan.reference, "retain_model": plan.retain_model,
                      "relearn": {"lrs": list(plan.relearn_lrs), "steps": plan.relearn_steps,
                                  "batch": plan.relearn_batch, "items": len(relearn_rows),
                                  "measured_items": len(held_out)},
                      "quantisation": "symmetric round-to-nearest, weight-only, simulated in fp32",
                      "machine": machine_facts(default_device(), plan.precision),
                      "wall_seconds": round(time.perf_counter() - started, 1)},
             "attacks": results}
    audit["lines"] = verdict_lines(audit)
    write_json(plan.out / "AUDIT.json", audit)
    write_text(plan.out / "AUDIT.md", markdown(audit))
    return audit


def _measured(plan: AuditPlan, subject: Subject, attack: str, sets: dict, relearn_rows: list[dict]) -> dict:
    """One subject under one attack, from the shared cache for the reference models."""
    key = hashlib.sha256(json.dumps([asdict(subject), attack, plan.data, plan.forget_split, plan.precision,
                                     plan.settings, plan.relearn_steps, plan.relearn_batch],
                                    sort_keys=True).encode()).hexdigest()[:16]
    cached = plan.cache / f"{subject.name}-{key}.json" if plan.cache and subject.name != "model" else None
    if cached is not None and cached.is_file():
        return json.loads(cached.read_text())
    model, tokenizer = _attacked(plan, subject, attack, relearn_rows)
    values = measure(model, tokenizer, sets, EvalSettings(**{"precision": plan.precision, **plan.settings}))
    if cached is not None:
        write_json(cached, values)
    return values


def _attacked(plan: AuditPlan, subject: Subject, attack: str, relearn_rows: list[dict]):
    model, tokenizer = load_model(subject.model)
    if subject.adapter and attack != "adapter_removed":
        model = attach_adapter(model, subject.adapter)
    model.to(default_device())
    if attack.startswith("quant_int"):
        bits, scheme = attack.removeprefix("quant_int").split("_")
        fake_quantise(model, int(bits), None if scheme == "channel" else int(scheme.removeprefix("g")))
    elif attack.startswith("relearn_lr"):
        relearn(model, tokenizer, relearn_rows, float(attack.removeprefix("relearn_lr")), plan)
    model.eval()
    return model, tokenizer


def relearn(model, tokenizer, rows: list[dict], lr: float, plan: AuditPlan) -> None:
    """Fine-tune the base weights (with any adapter attached and frozen) on `rows`: `relearn_steps` steps of
    `relearn_batch` items at a constant `lr`, answer tokens only."""
    base = [p for name, p in model.named_parameters() if not is_adapter_part(name)]
    items = [encode_qa(tokenizer, row["question"], row["answer"]) for row in rows]
    config = TrainConfig(epochs=1, learning_rate=lr, batch_size=plan.relearn_batch, max_steps=plan.relearn_steps,
                         warmup_ratio=0.0, scheduler="constant", precision=plan.precision)
    source = QABatches(items, config.batch_size, config.seed, tokenizer.pad_token_id,
                       multiple=width_multiple(plan.precision))
    train(model, lambda m, batch: (mean_nll(m, batch), {}), source, config, make_accelerator(plan.precision),
          param_groups=[{"params": base}], description=f"relearn lr {lr:g}")


def measure(model, tokenizer, sets: dict[str, list[dict]], settings: EvalSettings) -> dict:
    """Per set: mean answer probability, greedy ROUGE-L recall, and (ALTER) the share of answer tokens a forget
    head acted on."""
    specs = [DatasetSpec(name, rows, _item, lambda tok, row: [encode_qa(tok, row["question"], row["answer"])],
                         Generation(lambda tok, row: encode_prompt(tok, row["question"])))
             for name, rows in sets.items() if rows]
    log = run_datasets(model, tokenizer, specs, settings)
    values = {}
    for name in log:
        items = list(log[name]["items"].values())
        values[f"{name}_prob"] = float(np.mean([i["prob"] for i in items]))
        values[f"{name}_rouge"] = float(np.mean([i["rouge"] for i in items]))
        if "gate" in items[0]:
            values[f"{name}_gate_rate"] = float(np.mean([i["gate"] for i in items]))
    return values


def _item(row: dict, outputs) -> dict:
    nll = outputs.scores[0].nll
    return {"prob": float(np.exp(-nll)), "rouge": rouge_l(outputs.generation, row["answer"])["recall"]}


def _undone(result: dict, measured: str) -> float | None:
    if not {"model", "target", "retain"} <= set(result):
        return None
    key = f"{measured}_prob"
    value, target, retain = (result[name][key] for name in ("model", "target", "retain"))
    return None if abs(target - retain) < 1e-9 else (value - retain) / (target - retain)


def verdict_lines(audit: dict) -> list[str]:
    lines = []
    clean = audit["attacks"].get("none", {}).get("model", {})
    for attack, result in audit["attacks"].items():
        undone = result.get("undone")
        if undone is not None:
            control = result["model"]["retain_prob"] - clean["retain_prob"] if attack != "none" and clean else None
            lines.append(f"{attack}: {max(undone, 0.0):.0%} of the forgotten probability is back"
                         + (f"; the model's retain answers move {control:+.3f}" if control is not None else ""))
    removed = audit["attacks"].get("adapter_removed", {}).get("model")
    if removed is not None:
        lines.append(f"adapter removed: forget answer probability {removed['forget_prob']:.3f} — whoever holds the "
                     "base weights holds every forgotten fact")
    return lines


def markdown(audit: dict) -> str:
    header = "| attack | measured | model | target | retain | undone | model retain_prob | model gate on retain |"
    lines = [header, "|" + "---|" * 8]
    for attack, result in audit["attacks"].items():
        key = ("held_out" if attack.startswith("relearn") else "forget") + "_prob"
        model = result.get("model", {})
        cells = [attack, key, *(_number(result.get(name, {}).get(key)) for name in ("model", "target", "retain")),
                 _number(result.get("undone"), 2), _number(model.get("retain_prob")),
                 _number(model.get("retain_gate_rate"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {line}" for line in audit["lines"]) + "\n"


def compare_markdown(audits: dict[str, dict]) -> str:
    """One table per attack over several audits of the same world: the target and the retain model under the
    attack (from the first audit that has them), then each audited model."""
    attacks = list(dict.fromkeys(a for audit in audits.values() for a in audit["attacks"] if a != "adapter_removed"))
    parts = []
    for attack in attacks:
        key = ("held_out" if attack.startswith("relearn") else "forget") + "_prob"
        lines = [f"**{attack}**\n", f"| run | {key} | undone | retain_prob | gate on retain |", "|---|---|---|---|---|"]
        results = {name: audit["attacks"][attack] for name, audit in audits.items() if attack in audit["attacks"]}
        for reference in ("target", "retain"):
            measured = next((r[reference] for r in results.values() if reference in r), None)
            if measured is not None:
                lines.append(f"| {reference} | {_number(measured[key])} | - | {_number(measured['retain_prob'])} | - |")
        for name, result in results.items():
            model = result["model"]
            lines.append(f"| {name} | {_number(model[key])} | {_number(result.get('undone'), 2)} | "
                         f"{_number(model['retain_prob'])} | {_number(model.get('retain_gate_rate'))} |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def check_plan(plan: AuditPlan) -> None:
    data = TofuData(plan.data)
    data.load(plan.forget_split)
    data.load("retain_perturbed")
    if not plan.relearn_lrs and not plan.quantisation and not plan.adapter:
        raise UserError("nothing to audit: give --relearn-lrs or --quantisation, or an --adapter")
    for path in filter(None, (plan.reference, plan.retain_model)):
        if not Path(path).is_dir() and path != "smollm2":
            raise UserError(f"{path}: model folder not found")
