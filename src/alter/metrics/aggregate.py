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
