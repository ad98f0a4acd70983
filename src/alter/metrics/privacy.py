"""Membership-inference attacks and privacy leakage.

Every attack score follows one convention: higher means "looks less like a training member". AUC is computed
with members (forget) labelled 0 and non-members (holdout) labelled 1, so AUC 1.0 means the forget set is
perfectly recognisable and 0.5 means no leakage (the OpenUnlearning / MUSE convention).
"""

from __future__ import annotations

import zlib

import numpy as np
from sklearn.metrics import roc_auc_score

MIN_K_FRACTION = 0.4


def loss_score(token_logprobs: np.ndarray) -> float:
    return float(-np.mean(token_logprobs))


def zlib_score(token_logprobs: np.ndarray, text: str) -> float:
    """Loss divided by the zlib-compressed length of the text: discounts text that is simply predictable."""
    return loss_score(token_logprobs) / len(zlib.compress(text.encode("utf-8")))


def _lowest_mean(values: np.ndarray, fraction: float) -> float:
    count = max(1, int(len(values) * fraction))
    return float(np.mean(np.sort(values)[:count]))


def min_k_score(token_logprobs: np.ndarray, fraction: float = MIN_K_FRACTION) -> float:
    """Minus the mean of the lowest `fraction` of token log-probabilities (Shi et al., 2024)."""
    return -_lowest_mean(np.asarray(token_logprobs, dtype=float), fraction)


def min_k_plus_plus_score(token_logprobs: np.ndarray, expected: np.ndarray, std: np.ndarray,
                          fraction: float = MIN_K_FRACTION) -> float:
    """Min-K% on log-probs standardised by the model's own distribution at each position (Zhang et al., 2024)."""
    z = (np.asarray(token_logprobs) - np.asarray(expected)) / np.maximum(np.asarray(std), 1e-12)
    return -_lowest_mean(z, fraction)


def attack_auc(member_scores: list[float], nonmember_scores: list[float]) -> float:
    labels = [0] * len(member_scores) + [1] * len(nonmember_scores)
    return float(roc_auc_score(labels, list(member_scores) + list(nonmember_scores)))


def privleak(auc: float, retain_auc: float) -> float | None:
    """(s - s_retain) / s_retain * 100 with s = 1 - AUC; near 0 is ideal, -100 is a model that leaks everything.
    Undefined (None) when the reference's AUC is 1 (s_retain = 0)."""
    s, s_retain = 1.0 - auc, 1.0 - retain_auc
    if s_retain == 0:
        return None
    return float((s - s_retain) / s_retain * 100.0)


def privleak_or_note(auc: float, retain_auc: float) -> tuple[float | None, str | None]:
    value = privleak(auc, retain_auc)
    note = None if value is not None else ("privleak undefined: the reference model's Min-K% AUC is 1.0, so its "
                                           "s = 1 - AUC is 0 (is the reference the retain model?)")
    return value, note
