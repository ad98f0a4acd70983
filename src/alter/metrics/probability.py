"""Likelihood metrics. Inputs are per-item mean answer NLLs (length-normalised, answer tokens only)."""

from __future__ import annotations

import numpy as np


def answer_probability(nll: float) -> float:
    """P(a|q) = exp(-nll): the length-normalised probability of an answer."""
    return float(np.exp(-nll))


def normalised_probability(nll_correct: float, nll_wrong: list[float]) -> float:
    """P(a|q) / (P(a|q) + sum_j P(wrong_j|q)): the share of probability mass on the right option."""
    correct = np.exp(-nll_correct)
    return float(correct / (correct + np.exp(-np.asarray(nll_wrong)).sum()))


def truth_ratio(nll_correct: float, nll_wrong: list[float]) -> float:
    """P_wrong / P_correct with P_wrong the geometric mean of the wrong answers' probabilities."""
    return float(np.exp(nll_correct - np.mean(nll_wrong)))


def forget_truth_score(ratio: float) -> float:
    """min(tr, 1/tr): 1 when right and wrong answers are equally likely (nothing is known)."""
    return float(min(ratio, 1.0 / ratio)) if ratio > 0 else 0.0


def utility_truth_score(ratio: float) -> float:
    """max(0, 1 - tr): 1 when the right answer is far more likely than the wrong ones."""
    return float(max(0.0, 1.0 - ratio))
