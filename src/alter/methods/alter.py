"""ALTER (Chen et al., AAAI 2026): token-entropy-guided asymmetric LoRA unlearning. docs/method.md has the method as
implemented, each gap of the paper, the switch that closes it and the measurement behind its default.

Plan of a run:
1. one frozen pass over forget and retain items: every position's token entropy (cached for the whole run) and
   the mean-pooled last hidden state of each forget item;
2. k-means on those states splits the forget set into N sub-domains, one forget head each; the shared router (the
   default) is fitted on the training routes (`fit_shared_router`);
3. Phase I: A (lr 1e-5) and the retain head learn next-token NLL on high-entropy tokens of forget + retain text
   (with zero-initialised heads A gets no gradient unless some head moves);
4. Phase II: each forget head learns the inverse hinge loss on its own sub-domain's low-entropy answer tokens, the
   retain head learns NLL on retain answers, A still learns from high-entropy tokens only, a KL regulariser keeps the
   high-entropy tokens' distributions at the frozen model's, and per-layer routers (`router: layer`) learn the
   training routes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import DistributedType
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from alter.adapters.asymmetric import AsymmetricConfig, Routing, adapter_layers
from alter.adapters.runtime import AlterRuntime, EntropySettings, attach, running_mean, shared_router_from
from alter.data.batching import collate, length_sorted_batches
from alter.data.formatting import IGNORE_INDEX, EncodedQA
from alter.entropy import threshold_from, token_entropy
from alter.errors import UserError
from alter.methods.base import Method, first_answer_position
from alter.models.outputs import logits_at
from alter.models.precision import autocast
from alter.training.loop import TrainResult, train


@dataclass
class ALTERParams:
    entropy: str = "tsallis"  # or "shannon"
    q: float = 1.2
    threshold: float = 1.2  # paper: tokens with S_q > 1.2 are high-entropy
    threshold_quantile: float | None = None  # if set, the threshold is this quantile of the observed entropies
    entropy_guidance: bool = True  # off: plain asymmetric LoRA (every token low-entropy, A learns from all)
    forget_heads: int = 0  # 0 = chosen by silhouette score among 2..max_forget_heads
    max_forget_heads: int = 4
    rank: int = 8
    lora_alpha: float = 16.0
    top_k_high: int = 3
    temperature_high: float = 0.8
    temperature_low: float = 0.01
    phase1_epochs: float = 1.0
    lr_a: float = 1e-5
    lr_b: float = 1e-3
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    regulariser_weight: float = 0.01
    router_weight: float = 1.0
    router_from_retain_loss: bool = True  # retain tokens see the frozen forget heads through the router's softmax
    router: str = "shared"  # one gate for the model (docs/method.md); "layer": a learned gate per layer (paper reading)
    shared_router_retain_items: int = 4  # retain items per forget item that the shared router is fitted on


# --- frozen statistics and sub-domains ----------------------------------------------------------------------------


@torch.no_grad()
def frozen_statistics(model, items: list[EncodedQA], pad_id: int, params: ALTERParams, precision: str,
                      with_hidden: bool, batch_size: int = 16):
    """Per item: the entropy of every position's next-token distribution; optionally the mean-pooled last hidden state."""
    device = next(model.parameters()).device
    entropies: list[torch.Tensor | None] = [None] * len(items)
    pooled = [None] * len(items)
    for indices in length_sorted_batches([len(item.input_ids) for item in items], batch_size):
        batch = collate([items[i] for i in indices], pad_id)
        with autocast(precision, device):
            output = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                           output_hidden_states=with_hidden, use_cache=False)
        values = token_entropy(output.logits, params.entropy, params.q).cpu()
        for row, index in enumerate(indices):
            n = len(items[index].input_ids)
            entropies[index] = values[row, :n]
            if with_hidden:
                pooled[index] = output.hidden_states[-1][row, :n].float().mean(0).cpu().numpy()
    return entropies, (np.stack(pooled) if with_hidden else None)


def choose_subdomains(pooled: np.ndarray, requested: int, max_heads: int, seed: int) -> tuple[np.ndarray, dict]:
    """k-means assignment of forget items to sub-domains; k given, or the best silhouette score in 2..max_heads."""
    n = len(pooled)
    scores: dict[int, float] = {}
    if requested > 0:
        k = min(requested, n)
    else:
        for candidate in range(2, min(max_heads, n - 1) + 1):
            labels = KMeans(n_clusters=candidate, n_init=10, random_state=seed).fit_predict(pooled)
            scores[candidate] = float(silhouette_score(pooled, labels))
        k = max(scores, key=scores.get) if scores else 1
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(pooled) if k > 1 else np.zeros(n, int)
    return labels, {"heads": int(k), "silhouette": scores}


@torch.no_grad()
def fit_shared_router(model, forget_items: list[EncodedQA], retain_items: list[EncodedQA], domains: np.ndarray,
                      params: ALTERParams, pad_id: int, precision: str, seed: int) -> tuple[torch.nn.Linear, dict]:
    """One gate for the whole model: multinomial logistic regression from the running mean of the frozen model's
    last hidden state (positions <= t) to "no forget head" (output 0) or a forget sub-domain (1..N). Labels follow
    the training routes: positions predicting a forget answer token get their item's sub-domain; prompt positions
    and retain text get 0. The running mean carries the whole question (whose answer this is) into every answer
    position. A held-out probe on SmolLM2 and the 20-author world found forget answer positions with recall 0.99-1.0
    and took no retain answer position for a forget one; the last hidden state alone gave recall 0.44 and 10% false
    positives."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    count = min(len(retain_items), params.shared_router_retain_items * len(forget_items))
    retain_sample = [retain_items[i] for i in sorted(rng.choice(len(retain_items), count, replace=False))]
    features, labels, answer = [], [], []
    device = next(model.parameters()).device
    for items, item_labels in ((forget_items, domains + 1), (retain_sample, np.zeros(count, int))):
        for indices in length_sorted_batches([len(item.input_ids) for item in items], 16):
            batch = collate([items[i] for i in indices], pad_id)
            mask = batch["attention_mask"].to(device)
            with autocast(precision, device):
                hidden = model(input_ids=batch["input_ids"].to(device), attention_mask=mask,
                               output_hidden_states=True, use_cache=False).hidden_states[-1]
            means = running_mean(hidden, mask).cpu()
            for row, index in enumerate(indices):
                n, start = len(items[index].input_ids), items[index].prompt_length - 1
                features.append(means[row, :n].numpy())
                labels.append(np.where(np.arange(n) >= start, item_labels[index], 0))
                answer.append(np.arange(n) >= start)
    x, y, answer_positions = np.concatenate(features), np.concatenate(labels), np.concatenate(answer)
    scaler = StandardScaler().fit(x)
    classifier = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced", random_state=seed)
    classifier.fit(scaler.transform(x), y)
    weight, bias = classifier.coef_ / scaler.scale_, classifier.intercept_ - (classifier.coef_ / scaler.scale_) @ scaler.mean_
    if weight.shape[0] == 1:  # two classes (one sub-domain): sklearn keeps one row, for class 1
        weight, bias = np.concatenate([-weight / 2, weight / 2]), np.concatenate([-bias / 2, bias / 2])
    router = shared_router_from(torch.as_tensor(weight, dtype=torch.float32), torch.as_tensor(bias, dtype=torch.float32))
    predicted = classifier.predict(scaler.transform(x[answer_positions]))
    return router, {"positions": int(len(y)), "retain_items": count,
                    "answer_accuracy": float(np.mean(predicted == y[answer_positions]))}


# --- token masks --------------------------------------------------------------------------------------------------


def padded(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    out = torch.zeros(len(rows), width)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def predicts_answer(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose next-token distribution is scored against an answer token."""
    following = labels[:, 1:] != IGNORE_INDEX
    return torch.cat([following, torch.zeros_like(following[:, :1])], dim=1)


def next_labels(labels: torch.Tensor) -> torch.Tensor:
    return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE_INDEX)], dim=1)


class ALTERObjective:
    """Losses of both phases. `entropies[kind][i]` is item i's per-position entropy from the frozen pass."""

    def __init__(self, runtime: AlterRuntime, params: ALTERParams, entropies: dict, domains: torch.Tensor,
                 threshold: float):
        self.runtime, self.params, self.entropies = runtime, params, entropies
        self.domains, self.threshold = domains, threshold
        self.layers = len(adapter_layers(runtime.model))

    def high(self, kind: str, index: torch.Tensor, batch: dict) -> torch.Tensor:
        valid = batch["attention_mask"].bool()
        if not self.params.entropy_guidance:
            return torch.zeros_like(valid)
        values = padded([self.entropies[kind][i] for i in index.tolist()], valid.shape[1]).to(valid.device)
        return (values > self.threshold) & valid

    def a_mask(self, high: torch.Tensor, batch: dict) -> torch.Tensor:
        return high if self.params.entropy_guidance else batch["attention_mask"].bool()

    def _forward(self, model, batch: dict, routing: Routing) -> tuple[torch.Tensor, int]:
        """The logits from `start` on, the batch's first position that predicts an answer token, and `start`: every
        loss reads answer positions only, so the output layer skips the prompts."""
        start = first_answer_position(batch["labels"])
        keep = torch.arange(start, batch["input_ids"].shape[1], device=batch["input_ids"].device)
        self.runtime.slot.routing = routing
        try:
            logits = logits_at(lambda **extra: model(input_ids=batch["input_ids"],
                                                     attention_mask=batch["attention_mask"], **extra), model, keep)
        finally:
            self.runtime.slot.routing = None
        return logits.float(), start

    def phase1(self, model, batch: dict):
        parts = [batch["forget"], batch["retain"]]
        high = [self.high(kind, batch[f"{kind}_index"], sub) for kind, sub in zip(("forget", "retain"), parts)]
        a_grad = joined([self.a_mask(h, sub) for h, sub in zip(high, parts)], False)
        joint = joined_batch(parts)
        routing = Routing(high=joined(high, False), forget_head=torch.zeros_like(joint["input_ids"]), a_grad=a_grad,
                          retain_grad=a_grad)
        logits, start = self._forward(model, joint, routing)
        mask = (predicts_answer(joint["labels"]) & a_grad)[:, start:]
        targets = next_labels(joint["labels"])[:, start:]
        losses = [_masked_nll(logits[rows], targets[rows], mask[rows]) for rows in row_spans(parts)]
        loss = sum(losses) / len(losses)
        return loss, {"phase1_nll": loss.item()}

    def phase2(self, model, batch: dict):
        forget, retain = batch["forget"], batch["retain"]
        high = self.high("forget", batch["forget_index"], forget)
        answer = predicts_answer(forget["labels"])
        low_answer = answer & ~high
        head = (self.domains.to(high.device)[batch["forget_index"]] + 1)[:, None].expand_as(high)
        valid = forget["attention_mask"].bool()
        retain_high = self.high("retain", batch["retain_index"], retain)
        retain_valid = retain["attention_mask"].bool()
        layer_router = self.params.router == "layer"
        soft_route = self.params.router_from_retain_loss and layer_router
        routing = Routing(
            high=joined([high, retain_high], False),
            forget_head=joined([torch.where(low_answer, head, 0), torch.zeros_like(retain["input_ids"])], 0),
            a_grad=joined([self.a_mask(high, forget), self.a_mask(retain_high, retain)], False),
            retain_grad=joined([torch.zeros_like(high), retain_valid], False),
            router_target=joined([torch.where(low_answer, head, torch.where(valid, 0, IGNORE_INDEX)),
                                  torch.where(retain_valid, 0, IGNORE_INDEX)], IGNORE_INDEX) if layer_router else None,
            soft_route=joined([torch.zeros_like(high), retain_valid & soft_route], False))
        logits, start = self._forward(model, joined_batch([forget, retain]), routing)
        forget_rows, retain_rows = row_spans([forget, retain])
        forget_logits = logits[forget_rows, : forget["input_ids"].shape[1] - start]
        retain_logits = logits[retain_rows, : retain["input_ids"].shape[1] - start]
        forget_loss = inverse_hinge(forget_logits, next_labels(forget["labels"])[:, start:], low_answer[:, start:])
        keep = torch.arange(start, forget["input_ids"].shape[1], device=forget["input_ids"].device)
        frozen = logits_at(lambda **extra: self.runtime.frozen_output(forget["input_ids"], forget["attention_mask"],
                                                                      **extra), model, keep).float()
        regulariser = _masked_kl(frozen, forget_logits, (answer & high)[:, start:])
        retain_loss = _masked_nll(retain_logits, next_labels(retain["labels"])[:, start:],
                                  predicts_answer(retain["labels"])[:, start:])
        router_loss = routing.router_loss / self.layers
        p = self.params
        loss = (p.forget_weight * forget_loss + p.retain_weight * retain_loss + p.regulariser_weight * regulariser
                + p.router_weight * router_loss)
        return loss, {"forget_loss": forget_loss.item(), "retain_loss": retain_loss.item(),
                      "regulariser": regulariser.item(), "router_loss": float(torch.as_tensor(router_loss).detach())}


def joined(parts: list[torch.Tensor], fill) -> torch.Tensor:
    """[batch, seq] tensors stacked along the batch, right-padded with `fill` to the widest."""
    width = max(part.shape[1] for part in parts)
    return torch.cat([torch.cat([part, part.new_full((part.shape[0], width - part.shape[1]), fill)], dim=1)
                      for part in parts])


def joined_batch(batches: list[dict]) -> dict:
    """Forget and retain rows in one batch, so a step is one forward and one backward (what DDP requires)."""
    return {"input_ids": joined([b["input_ids"] for b in batches], 0),
            "attention_mask": joined([b["attention_mask"] for b in batches], 0),
            "labels": joined([b["labels"] for b in batches], IGNORE_INDEX)}


def row_spans(batches: list[dict]) -> list[slice]:
    """The rows of each batch inside `joined_batch(batches)`."""
    spans, start = [], 0
    for batch in batches:
        rows = batch["input_ids"].shape[0]
        spans.append(slice(start, start + rows))
        start += rows
    return spans


def inverse_hinge(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked positions of 1 + p(y) - max_{v != y} p(v) (LoKU's form): pushes the true token down and
    the best competitor up."""
    if not mask.any():
        return logits.sum() * 0.0
    probs = torch.softmax(logits[mask], dim=-1)
    y = targets[mask]
    p_true = probs.gather(-1, y[:, None]).squeeze(-1)
    p_other = probs.scatter(-1, y[:, None], 0.0).max(-1).values
    return (1.0 + p_true - p_other).mean()


def _masked_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if not mask.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[mask], targets[mask])


def _masked_kl(reference_logits: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(p_reference || p) averaged over masked positions."""
    if not mask.any():
        return logits.sum() * 0.0
    ref = F.log_softmax(reference_logits[mask], -1)
    return (ref.exp() * (ref - F.log_softmax(logits[mask], -1))).sum(-1).mean()


# --- the run ------------------------------------------------------------------------------------------------------


def parameter_groups(model, params: ALTERParams, phase: int) -> list[dict]:
    layers = [layer for _, layer in adapter_layers(model)]
    heads = [layer.retain_B for layer in layers]
    if phase == 2:
        heads += [layer.forget_B for layer in layers]
        if params.router == "layer":
            heads += [layer.router for layer in layers]
    model.requires_grad_(False)
    for parameter in [layer.lora_A for layer in layers] + heads:
        parameter.requires_grad_(True)
    return [{"params": [layer.lora_A for layer in layers], "lr": params.lr_a}, {"params": heads, "lr": params.lr_b}]


def _histogram(values: np.ndarray, bins: int = 60) -> dict:
    counts, edges = np.histogram(values, bins=bins)
    return {"edges": edges.round(4).tolist(), "counts": counts.tolist(), "kind": "answer tokens, forget + retain"}


def run(model, tokenizer, forget_items, retain_items, source, recipe, accelerator, out_dir, resume, precision):
    """Train an ALTER adapter on `model` in place; return (runtime, train result, facts for the manifest)."""
    params: ALTERParams = recipe.params
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise UserError("--method alter runs in one process or under DDP: its frozen passes read the whole model, "
                        "which FSDP and DeepSpeed shard")
    if params.router not in ("layer", "shared"):
        raise UserError(f"params.router: expected 'layer' or 'shared', got {params.router!r}")
    forget_entropy, pooled = frozen_statistics(model, forget_items, tokenizer.pad_token_id, params, precision, True)
    retain_entropy, _ = frozen_statistics(model, retain_items, tokenizer.pad_token_id, params, precision, False)
    answer_values = torch.cat([e[item.prompt_length - 1 : -1] for e, item in
                               zip(forget_entropy + retain_entropy, forget_items + retain_items)])
    threshold = threshold_from(answer_values, params.threshold, params.threshold_quantile)
    domains, clustering = choose_subdomains(pooled, params.forget_heads, params.max_forget_heads, recipe.train.seed)
    config = AsymmetricConfig(rank=params.rank, alpha=params.lora_alpha, forget_heads=clustering["heads"],
                              top_k_high=params.top_k_high, temperature_high=params.temperature_high,
                              temperature_low=params.temperature_low, entropy_threshold=threshold,
                              router=params.router)
    entropy = EntropySettings(params.entropy, params.q, threshold, params.entropy_guidance)
    torch.manual_seed(recipe.train.seed)
    shared_router, shared_facts = fit_shared_router(model, forget_items, retain_items, domains, params,
                                                    tokenizer.pad_token_id, precision, recipe.train.seed) \
        if params.router == "shared" else (None, None)
    runtime = attach(model, config, entropy)
    runtime.shared_router = shared_router
    objective = ALTERObjective(runtime, params, {"forget": forget_entropy, "retain": retain_entropy},
                               torch.as_tensor(domains), threshold)
    phase1 = replace(recipe.train, epochs=params.phase1_epochs)
    first = train(model, objective.phase1, source, phase1, accelerator, run_dir=out_dir / "checkpoints" / "phase1",
                  param_groups=parameter_groups(model, params, 1), resume=resume, description="alter phase I")
    second = train(model, objective.phase2, source, recipe.train, accelerator, run_dir=out_dir / "checkpoints" / "phase2",
                   param_groups=parameter_groups(model, params, 2), resume=resume, description="alter phase II")
    result = TrainResult(steps=first.steps + second.steps, tokens=first.tokens + second.tokens,
                         wall_seconds=round(first.wall_seconds + second.wall_seconds, 2),
                         peak_memory_mb=max(first.peak_memory_mb, second.peak_memory_mb),
                         loss_curve=[{"phase": 1, **p} for p in first.loss_curve]
                         + [{"phase": 2, **p} for p in second.loss_curve])
    facts = {
        "entropy_threshold": threshold,
        "high_entropy_fraction": float((answer_values > threshold).float().mean()) if params.entropy_guidance else 0.0,
        "clustering": {**clustering, "sizes": np.bincount(domains, minlength=clustering["heads"]).tolist()},
        "entropy_histogram": _histogram(answer_values.numpy()),
        **({"shared_router": shared_facts} if shared_facts else {}),
    }
    clusters = {str(i): int(d) for i, d in enumerate(domains)}
    return runtime, result, facts, clusters


METHOD = Method(
    "alter",
    "ALTER: token-entropy-guided asymmetric LoRA (shared A, one forget head per sub-domain, retain head, router)",
    ALTERParams, loss=None, needs_reference=False,
    train_defaults={"epochs": 3.0, "batch_size": 4}, runner=run,
)

