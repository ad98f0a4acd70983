"""Aggregates over a whole evaluation: forget quality and model utility."""

from __future__ import annotations

import numpy as np
from scipy.stats import hmean, ks_2samp

UTILITY_KEYS = ("retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
                "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
                "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio")


def forget_quality(truth_ratios: list[float], retain_truth_ratios: list[float]) -> float:
    """p-value of the two-sided KS test between the per-item forget truth ratios of a model and the retain model."""
    return float(ks_2samp(np.asarray(truth_ratios), np.asarray(retain_truth_ratios)).pvalue)


def model_utility(summary: dict[str, float]) -> float:
    """Harmonic mean of the nine retain / real-authors / world-facts values; 0 if any of them is 0."""
    return float(hmean(np.array([summary[key] for key in UTILITY_KEYS], dtype=float)))


FORGOT_MIN_DROP = 0.02  # below this fall of the forget answers' mean probability, a run is said to have moved nothing


def forgetting_verdict(before: float, after: float, where: str = "",
                       what: str = "forget answers' probability") -> tuple[bool, str]:
    """Whether an unlearning run moved its forget answers, and one line saying so; `where` names the items measured,
    `what` the measure."""
    moved = before - after >= FORGOT_MIN_DROP
    change = f"{what}{where} {before:.3f} -> {after:.3f}"
    if moved:
        return True, change
    return False, (f"nothing was forgotten: {change} (a fall under {FORGOT_MIN_DROP}); raise the learning rate or "
                   "check the method's logs")
