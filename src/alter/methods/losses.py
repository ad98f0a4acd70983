"""Token losses over masked positions, shared by the baselines and ALTER. `logits` [..., vocab], `targets` and
`mask` [...]: each loss averages over the positions where `mask` is true and is 0 (with a graph) when none is."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _nothing(logits: torch.Tensor) -> torch.Tensor:
    return logits.sum() * 0.0


def masked_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if not mask.any():
        return _nothing(logits)
    return F.cross_entropy(logits[mask].float(), targets[mask])


def masked_npo(reference_logits: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
               beta: float, direction: torch.Tensor | None = None) -> torch.Tensor:
    """NPO over rows [rows, seq]: -(2/beta) mean log sigmoid(-beta * sum_t (log p - log p_reference)(y_t)), the sum
    over each row's masked positions; rows without one are left out. `direction` [rows]: +1 pushes a row's answer
    down, -1 pulls it back up (its term is negated), 0 leaves it alone."""
    rows = mask.any(-1)
    if not rows.any():
        return _nothing(logits)
    logits, reference_logits, targets, mask = logits[rows], reference_logits[rows], targets[rows], mask[rows]
    index = targets.clamp_min(0)[..., None]
    own = F.log_softmax(logits.float(), -1).gather(-1, index).squeeze(-1)
    reference = F.log_softmax(reference_logits.float(), -1).gather(-1, index).squeeze(-1)
    log_ratio = ((own - reference) * mask).sum(-1)
    values = -2.0 / beta * F.logsigmoid(-beta * log_ratio)
    return (values if direction is None else values * direction[rows]).mean()


def masked_kl(reference_logits: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(p_reference || p) averaged over masked positions."""
    if not mask.any():
        return _nothing(logits)
    reference = F.log_softmax(reference_logits[mask].float(), -1)
    return (reference.exp() * (reference - F.log_softmax(logits[mask].float(), -1))).sum(-1).mean()


def inverse_hinge(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                  stop_at_top: bool = False, direction: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over masked positions of 1 + p(y) - max_{v != y} p(v) (LoKU's form): pushes the true token down and
    the best competitor up. `stop_at_top`: max(0, p(y) - max_{v != y} p(v)) instead, which stops pushing a token
    once another one is more likely (the same gradient until then). `direction` (same shape as `mask`): +1 pushes a
    position's true token down, -1 pulls it back up (its term is negated)."""
    if not mask.any():
        return _nothing(logits)
    probs = torch.softmax(logits[mask].float(), dim=-1)
    y = targets[mask]
    p_true = probs.gather(-1, y[:, None]).squeeze(-1)
    p_other = probs.scatter(-1, y[:, None], 0.0).max(-1).values
    margin = p_true - p_other
    values = margin.clamp_min(0.0) if stop_at_top else 1.0 + margin
    return (values if direction is None else values * direction[mask]).mean()
