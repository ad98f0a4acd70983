"""Token entropy: Tsallis S_q(p) = (1 - sum_i p_i^q) / (q - 1), Shannon in the limit q -> 1.

The entropy of position t is that of the frozen model's next-token distribution at t, i.e. of the distribution that
predicts token t+1: a low value means the model is sure of the next token (an entity, a fact), a high value means
many continuations are plausible (function words, structure). Tokens split into high/low by an absolute threshold
(paper: 1.2) or by a quantile of the observed values.
"""

from __future__ import annotations

import torch


def shannon_entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def tsallis_entropy(logits: torch.Tensor, q: float) -> torch.Tensor:
    if abs(q - 1.0) < 1e-6:
        return shannon_entropy(logits)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return (1.0 - torch.exp(q * logp).sum(-1)) / (q - 1.0)


def token_entropy(logits: torch.Tensor, kind: str = "tsallis", q: float = 1.2) -> torch.Tensor:
    if kind == "shannon":
        return shannon_entropy(logits)
    if kind == "tsallis":
        return tsallis_entropy(logits, q)
    raise ValueError(f"entropy kind must be 'tsallis' or 'shannon', got {kind!r}")


def threshold_from(values: torch.Tensor, threshold: float | None, quantile: float | None) -> float:
    """The absolute high/low threshold: given directly, or the `quantile` of the observed entropies."""
    if quantile is not None:
        return float(torch.quantile(values.float(), quantile))
    if threshold is None:
        raise ValueError("give an entropy threshold or a quantile")
    return float(threshold)
