"""Token entropy: Tsallis S_q(p) = (1 - sum_i p_i^q) / (q - 1), Shannon in the limit q -> 1.

The entropy of position t is that of the frozen model's next-token distribution at t, i.e. of the distribution that
predicts token t+1: a low value means the model is sure of the next token (an entity, a fact), a high value means
many continuations are plausible (function words, structure). Tokens split into high/low by an absolute threshold
(paper: 1.2) or by a quantile of the observed values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def shannon_entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def tsallis_entropy(logits: torch.Tensor, q: float) -> torch.Tensor:
    if abs(q - 1.0) < 1e-6:
        return shannon_entropy(logits)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return (1.0 - torch.exp(q * logp).sum(-1)) / (q - 1.0)


POSITIONS_PER_CHUNK = 256  # a float copy of 256 vocabulary-wide distributions is 50 MB for SmolLM2's 49k tokens


def token_entropy(logits: torch.Tensor, kind: str = "tsallis", q: float = 1.2) -> torch.Tensor:
    """Each position's entropy ([...] from [..., vocab]), a chunk of positions at a time: a whole frozen-pass batch at
    once made several float copies of all its logits (docs/results.md, "ALTER's unlearning cost")."""
    if kind not in ("tsallis", "shannon"):
        raise ValueError(f"entropy kind must be 'tsallis' or 'shannon', got {kind!r}")
    flat = logits.reshape(-1, logits.shape[-1])
    chunks = [shannon_entropy(chunk) if kind == "shannon" else tsallis_entropy(chunk, q)
              for chunk in flat.split(POSITIONS_PER_CHUNK)]
    values = torch.cat(chunks) if chunks else flat.new_zeros(0, dtype=torch.float32)
    return values.reshape(logits.shape[:-1])


@dataclass
class EntropySettings:
    """Which entropy, and where high begins. The defaults are the paper's threshold with q = 1.2 (docs/method.md):
    every place that classifies tokens (ALTER's training, evaluation logs, the report) uses one instance."""

    kind: str = "tsallis"
    q: float = 1.2
    threshold: float = 1.2
    guidance: bool = True  # off: every token counts as low-entropy (plain asymmetric LoRA)

    def __post_init__(self):
        if self.kind not in ("tsallis", "shannon"):
            raise ValueError(f"entropy: expected 'tsallis' or 'shannon', got {self.kind!r}")

    def values(self, logits: torch.Tensor) -> torch.Tensor:
        return token_entropy(logits, self.kind, self.q)

    def is_high(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.guidance:
            return torch.zeros(logits.shape[:-1], dtype=torch.bool, device=logits.device)
        return self.values(logits) > self.threshold


def threshold_from(values: torch.Tensor, threshold: float | None, quantile: float | None) -> float:
    """The absolute high/low threshold: given directly, or the `quantile` of the observed entropies."""
    if quantile is not None:
        return float(torch.quantile(values.float(), quantile))
    if threshold is None:
        raise ValueError("give an entropy threshold or a quantile")
    return float(threshold)
