"""ALTER's two training phases as objectives over joined forget + retain batches.

Every step is one forward over the forget and retain rows together (right-padded to the widest, per-row routing),
then one backward: what DDP requires. `routes` says where forget heads act in training, the same policy as at
inference for each router (docs/method.md, "Training routes"):
- 'content': wherever the fitted gate fires, on forget and retain rows alike (a head learns only on its own
  sub-domain's forget rows, from where its gate fires; on retain rows the heads are read but never trained);
- 'layer', 'shared': at the answer tokens of forget rows where the heads learn (the routes the router learns);
- 'none': every head on every token; retain rows train every head too, as nothing else keeps them harmless there.
A forget head learns only on its own sub-domain's rows (isolation; `head_grad`; under 'none' on retain rows too),
and only at the tokens `forget_tokens` names: the low-entropy ones (the paper), the high-entropy ones or all of them.
The forget loss reads the answer positions among those and the KL regulariser the other answer positions; with
`high` the heads learn at the regulariser's positions too (`heads_learn`).
"""

from __future__ import annotations

import torch

from alter.adapters.layer import ALL_HEADS, Routing
from alter.adapters.model import AlterModel
from alter.data.batching import pad_rows
from alter.data.formatting import IGNORE_INDEX
from alter.methods.alter.generic import GenericTargets, lowered_by_the_name
from alter.methods.alter.params import ALTERParams
from alter.methods.base import first_answer_position
from alter.methods.losses import inverse_hinge, masked_kl, masked_nll, masked_npo
from alter.models.outputs import logits_at


def predicts_answer(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose next-token distribution is scored against an answer token."""
    following = labels[:, 1:] != IGNORE_INDEX
    return torch.cat([following, torch.zeros_like(following[:, :1])], dim=1)


def next_labels(labels: torch.Tensor) -> torch.Tensor:
    return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE_INDEX)], dim=1)


def forget_positions(low_answer: torch.Tensor, targets: torch.Tensor, end_ids: tuple[int, ...]) -> torch.Tensor:
    """Where the inverse hinge acts: low-entropy answer positions, except those predicting a special token (the end
    of the answer): pushing those down forgets no fact, and makes the model run on past its answer."""
    return low_answer & ~torch.isin(targets, torch.tensor(end_ids, dtype=targets.dtype, device=targets.device))


EXCLUDED_LOGIT = -1e9


def without_answer_token(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The logits with each position's answer token made impossible: softmax gives the rest renormalised, what the
    model said with the fact it is to forget taken out (`forget_loss: exclude`). The token's logit is set far below
    the rest but finite, so that its term in a KL is 0 x finite = 0, not 0 x inf = NaN."""
    logits = logits.float().clone()
    rows, cols = torch.nonzero(targets != IGNORE_INDEX, as_tuple=True)
    logits[rows, cols, targets[rows, cols]] = EXCLUDED_LOGIT
    return logits


def joined_batch(batches: list[dict]) -> dict:
    """Forget and retain rows in one batch, so a step is one forward and one backward."""
    return {"input_ids": pad_rows([b["input_ids"] for b in batches], 0),
            "attention_mask": pad_rows([b["attention_mask"] for b in batches], 0),
            "labels": pad_rows([b["labels"] for b in batches], IGNORE_INDEX)}


def row_spans(batches: list[dict]) -> list[slice]:
    """The rows of each batch inside `joined_batch(batches)`."""
    spans, start = [], 0
    for batch in batches:
        spans.append(slice(start, start + batch["input_ids"].shape[0]))
        start += batch["input_ids"].shape[0]
    return spans


class ALTERObjective:
    """Losses of both phases. Per item, from the frozen pass: `entropies[kind][i]` (each position's entropy) and,
    for the content gate, `gate_weights[kind][i]` (its forget-head weights at each position, [tokens, N]).
    `end_ids`: the tokenizer's special tokens, which the forget loss leaves alone (`forget_positions`). `floors`: per
    forget row, the mean answer log-probability the forget loss holds it at (floor.py): below it, the loss pulls the
    row back up; None: no floor. `plain[kind]`: per item, whether it is in the sampled plain format. `generic`: the
    renamed forget items whose frozen predictions are the `generic` forget loss's targets (generic.py)."""

    def __init__(self, adapter: AlterModel, params: ALTERParams, entropies: dict, domains: torch.Tensor,
                 threshold: float, gate_weights: dict | None = None, end_ids: tuple[int, ...] = (),
                 floors: torch.Tensor | None = None, variants: int = 1, plain: dict | None = None,
                 generic: GenericTargets | None = None):
        self.adapter, self.params, self.entropies, self.variants = adapter, params, entropies, variants
        self.domains, self.threshold, self.gate_weights, self.end_ids = domains, threshold, gate_weights, end_ids
        self.floors, self.generic = floors, generic
        self.plain = {kind: torch.as_tensor(flags, dtype=torch.bool) for kind, flags in (plain or {}).items()}
        self.heads = adapter.config.forget_heads

    @staticmethod
    def _rows(values: list, index: torch.Tensor, batch: dict) -> torch.Tensor:
        """Per-item arrays ([tokens] or [tokens, N]) of the batch's items, zero-padded to the batch's width:
        [rows, seq(, N)]."""
        width = batch["input_ids"].shape[1]
        rows = [torch.as_tensor(values[i]) for i in index.tolist()]
        return torch.stack([torch.cat([row, row.new_zeros(width - len(row), *row.shape[1:])]) for row in rows])

    def high(self, kind: str, index: torch.Tensor, batch: dict) -> torch.Tensor:
        valid = batch["attention_mask"].bool()
        if not self.params.entropy_guidance:
            return torch.zeros_like(valid)
        return (self._rows(self.entropies[kind], index, batch).to(valid.device) > self.threshold) & valid

    def without_nll(self, kind: str, index: torch.Tensor) -> torch.Tensor:
        """Per row of the batch: no NLL here (a row in the plain format, with `plain_nll` off)."""
        if self.params.plain_nll or kind not in self.plain:
            return torch.zeros(len(index), dtype=torch.bool)
        return self.plain[kind][index.cpu()]

    def _gate(self, kind: str, index: torch.Tensor, batch: dict) -> torch.Tensor:
        """The fitted content gate's forget-head weights, [rows, seq, N]."""
        return self._rows(self.gate_weights[kind], index, batch).float().to(batch["input_ids"].device)

    def _forward(self, model, batch: dict, routing: Routing):
        """Logits from the batch's first answer-predicting position on (the output layer skips the prompts), in the
        forward's precision: each loss upcasts only the positions it reads, so no float copy of every position is
        made."""
        start = first_answer_position(batch["labels"])
        keep = torch.arange(start, batch["input_ids"].shape[1], device=batch["input_ids"].device)
        with self.adapter.routed(routing):
            logits = logits_at(lambda **extra: model(input_ids=batch["input_ids"],
                                                     attention_mask=batch["attention_mask"], **extra), model, keep)
        return logits, start

    def phase1(self, model, batch: dict):
        """A (and B_r) learn next-token NLL on high-entropy answer tokens; the forget heads are off."""
        kinds, parts = ("forget", "retain"), [batch["forget"], batch["retain"]]
        high = [self.high(kind, batch[f"{kind}_index"], part) for kind, part in zip(kinds, parts)]
        a_grad = [self._a_mask(h, part) & ~self.without_nll(kind, batch[f"{kind}_index"]).to(h.device)[:, None]
                  for kind, h, part in zip(kinds, high, parts)]
        retain_grad = [a_grad[0] & self.params.retain_head_on_forget, a_grad[1]]
        joint = joined_batch(parts)
        joint_a = pad_rows(a_grad, False)
        routing = Routing(high=pad_rows(high, False), weights=joint_a.new_zeros(*joint_a.shape, self.heads).float(),
                          a_grad=joint_a, retain_grad=pad_rows(retain_grad, False),
                          head_grad=torch.zeros_like(joint["input_ids"]))
        logits, start = self._forward(model, joint, routing)
        mask = (predicts_answer(joint["labels"]) & joint_a)[:, start:]
        targets = next_labels(joint["labels"])[:, start:]
        losses = [masked_nll(logits[rows], targets[rows], mask[rows]) for rows in row_spans(parts)]
        loss = sum(losses) / len(losses)
        return loss, {"phase1_nll": loss.item()}

    def forget_learns(self, high: torch.Tensor) -> torch.Tensor:
        """Where a forget head may learn: low-entropy tokens (the paper), high-entropy ones, or every token
        (`forget_tokens`)."""
        return {"low": ~high, "high": high, "all": torch.ones_like(high)}[self.params.forget_tokens]

    def heads_learn(self, high: torch.Tensor) -> torch.Tensor:
        """Where a forget head takes gradients: where its forget loss acts, and, with `forget_tokens: high`, at the
        low-entropy tokens too, where the regulariser holds the template words at the target (without them there,
        the heads' changes at the facts would spill onto the words around them unchecked)."""
        return torch.ones_like(high) if self.params.forget_tokens == "high" else self.forget_learns(high)

    def _a_mask(self, high: torch.Tensor, batch: dict) -> torch.Tensor:
        return high if self.params.entropy_guidance else batch["attention_mask"].bool()

    def routes(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forget-head weights [rows, seq, N] and head_grad [rows, seq] for the forget rows, then the retain rows."""
        forget, retain = batch["forget"], batch["retain"]
        high = self.high("forget", batch["forget_index"], forget)
        head = (self.domains.to(high.device)[batch["forget_index"]].long() + 1)[:, None].expand_as(high)
        own = torch.nn.functional.one_hot(head.long() - 1, self.heads).float()
        learns = self.heads_learn(high)
        router = self.params.router
        retain_shape = (*retain["input_ids"].shape, self.heads)
        if router in ("content", "names"):  # every head the gate switches on acts, as at inference; the own head learns
            on = self._gate("forget", batch["forget_index"], forget)
            forget_weights, forget_grad = on, torch.where(((on * own).sum(-1) > 0) & learns, head, 0)
            retain_weights = self._gate("retain", batch["retain_index"], retain)
            retain_grad = torch.zeros_like(retain["input_ids"])
        elif router == "none":
            valid = forget["attention_mask"].bool()
            forget_weights = valid[..., None].float().expand(*valid.shape, self.heads)
            forget_grad = torch.where(valid & learns, head, 0)
            retain_weights = retain["attention_mask"][..., None].float().expand(retain_shape)
            retain_grad = torch.where(retain["attention_mask"].bool(), ALL_HEADS, 0)
        else:
            low_answer = predicts_answer(forget["labels"]) & learns
            forget_weights = own * low_answer[..., None]
            forget_grad = torch.where(low_answer, head, 0)
            retain_weights = torch.zeros(retain_shape, device=high.device)
            retain_grad = torch.zeros_like(retain["input_ids"])
        return forget_weights, forget_grad, retain_weights, retain_grad

    def phase2(self, model, batch: dict):
        forget, retain = batch["forget"], batch["retain"]
        high = self.high("forget", batch["forget_index"], forget)
        retain_high = self.high("retain", batch["retain_index"], retain)
        answer = predicts_answer(forget["labels"])
        learns = answer & self.forget_learns(high)
        forget_weights, forget_grad, retain_weights, retain_grad = self.routes(batch)
        joint = joined_batch([forget, retain])
        routing = Routing(
            high=pad_rows([high, retain_high], False),
            weights=torch.cat([_pad3(forget_weights, joint), _pad3(retain_weights, joint)]),
            a_grad=pad_rows([self._a_mask(high, forget), self._a_mask(retain_high, retain)], False),
            retain_grad=pad_rows([torch.zeros_like(high), retain["attention_mask"].bool()], False),
            head_grad=pad_rows([forget_grad, retain_grad], 0),
            **self._router_training(forget, retain, learns, batch["forget_index"]))
        logits, start = self._forward(model, joint, routing)
        forget_rows, retain_rows = row_spans([forget, retain])
        forget_logits = logits[forget_rows, : forget["input_ids"].shape[1] - start]
        retain_logits = logits[retain_rows, : retain["input_ids"].shape[1] - start]
        targets = next_labels(forget["labels"])[:, start:]
        frozen = self._frozen(model, forget, start)
        positions = forget_positions(learns[:, start:], targets, self.end_ids)
        direction = self.floor_direction(forget_logits, targets, answer[:, start:], batch["forget_index"])
        if self.params.forget_loss == "generic":
            generic, has_target = self.generic.logits(lambda part, keep: self._frozen_at(model, part, keep),
                                                      batch["forget_index"], start, forget["input_ids"].shape[1],
                                                      forget["input_ids"].device)
            generic = lowered_by_the_name(generic, frozen, self.params.generic_alpha)
            forget_loss = masked_kl(generic, forget_logits, positions & has_target)
        elif self.params.forget_loss == "exclude":
            forget_loss = masked_kl(without_answer_token(frozen, targets), forget_logits, positions)
        elif self.params.forget_loss == "npo":
            forget_loss = masked_npo(frozen, forget_logits, targets, positions, self.params.npo_beta, direction)
        else:
            forget_loss = inverse_hinge(forget_logits, targets, positions,
                                        stop_at_top=self.params.forget_loss == "hinge_to_top",
                                        direction=direction[:, None].expand_as(targets))
        regulariser = masked_kl(frozen, forget_logits, (answer & ~learns)[:, start:])
        retain_loss = self._retain_loss(model, retain, retain_logits, start, batch["retain_index"])
        router_loss = routing.router_loss / max(1, len(self.adapter.layers))
        p = self.params
        loss = (p.forget_weight * forget_loss + p.retain_weight * retain_loss + p.regulariser_weight * regulariser
                + p.router_weight * router_loss)
        return loss, {"forget_loss": forget_loss.item(), "retain_loss": retain_loss.item(),
                      "regulariser": regulariser.item(), "router_loss": float(torch.as_tensor(router_loss).detach()),
                      "forget_rows_pushed": (direction > 0).float().mean().item(),
                      "forget_rows_pulled": (direction < 0).float().mean().item()}

    def _retain_loss(self, model, retain: dict, logits: torch.Tensor, start: int, index: torch.Tensor) -> torch.Tensor:
        """Per retain answer token: NLL (`nll`), KL(target || adapted) (`kl`), or NLL on some rows and KL on the
        others, where NLL would teach the retain head answers in formats the target was not trained on (the `plain`
        probe; docs/method.md): for `kl_in_contexts`, KL on the rows in a sampled training context; with `plain_nll`
        off, KL on the rows in the plain format."""
        answer = predicts_answer(retain["labels"])[:, start:]
        targets = next_labels(retain["labels"])[:, start:]
        kind = self.params.retain_loss
        if kind == "nll" and self.params.plain_nll:
            return masked_nll(logits, targets, answer)
        if kind == "kl":
            return masked_kl(self._frozen(model, retain, start), logits, answer)
        # every rank runs the frozen pass on every step, so that sharded ranks (FSDP) stay in step
        frozen = self._frozen(model, retain, start)
        held = self.without_nll("retain", index) | ((index.cpu() % self.variants != 0) & (kind == "kl_in_contexts"))
        held = held.to(answer.device)[:, None]
        own, other = answer & ~held, answer & held
        nll = masked_nll(logits, targets, own)
        kl = masked_kl(frozen, logits, other)
        return (own.sum() * nll + other.sum() * kl) / answer.sum().clamp(min=1)

    def _frozen(self, model, part: dict, start: int) -> torch.Tensor:
        """The frozen target's logits for a part of the batch, from position `start` on."""
        return self._frozen_at(model, part, torch.arange(start, part["input_ids"].shape[1],
                                                         device=part["input_ids"].device))

    def _frozen_at(self, model, part: dict, keep: torch.Tensor) -> torch.Tensor:
        return logits_at(lambda **extra: self.adapter.frozen_output(part["input_ids"], part["attention_mask"],
                                                                    **extra), model, keep)

    @torch.no_grad()
    def floor_direction(self, logits: torch.Tensor, targets: torch.Tensor, answer: torch.Tensor,
                        index: torch.Tensor) -> torch.Tensor:
        """Per forget row, +1 where the forget loss pushes its answer down (its mean answer log-probability is above
        its floor, or there are no floors), -1 where it pulls it back up to the floor (it fell below), 0 where the
        row has no floor (NaN: the target knows it no better than unseen rows)."""
        if self.floors is None:
            return torch.ones(len(index), device=logits.device)
        floors = self.floors.to(logits.device)[index]
        scores = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.clamp_min(0)[..., None]).squeeze(-1)
        mean = (scores * answer).sum(1) / answer.sum(1).clamp_min(1)
        return torch.where(floors.isnan(), 0.0, torch.where(mean > floors, 1.0, -1.0))

    def _router_training(self, forget: dict, retain: dict, low_answer: torch.Tensor, index: torch.Tensor) -> dict:
        """'layer' router: the tokens where its softmax weights the heads (`router_training`), and the routes it
        learns by cross-entropy: a forget row's low-entropy answer tokens -> their head, every other token -> 'no
        forget head' (only with a null output; without one, those tokens teach the router nothing)."""
        if self.params.router != "layer":
            return {}
        mode = self.params.router_training
        forget_valid, retain_valid = forget["attention_mask"].bool(), retain["attention_mask"].bool()
        tokens = [forget_valid & (mode == "all"), retain_valid & (mode in ("retain", "all"))]
        head = (self.domains.to(low_answer.device)[index].long() + 1)[:, None].expand_as(low_answer)
        null = self.adapter.config.null_output
        none = 0 if null else IGNORE_INDEX
        forget_target = torch.where(low_answer, head if null else head - 1,
                                    torch.where(forget_valid, none, IGNORE_INDEX))
        retain_target = torch.where(retain_valid, none, IGNORE_INDEX)
        return {"router_tokens": pad_rows(tokens, False),
                "router_target": pad_rows([forget_target, retain_target], IGNORE_INDEX)}


def _pad3(weights: torch.Tensor, joint: dict) -> torch.Tensor:
    width = joint["input_ids"].shape[1]
    return torch.cat([weights, weights.new_zeros(weights.shape[0], width - weights.shape[1], weights.shape[2])], 1)
