"""Memorisation from teacher-forced greedy predictions: `matches[t]` is argmax p(.|prefix) == answer token t."""

from __future__ import annotations

import numpy as np


def exact_memorization(matches: np.ndarray) -> float:
    """Fraction of answer tokens predicted exactly under teacher forcing."""
    return float(np.mean(matches)) if len(matches) else 0.0


def extraction_strength(matches: np.ndarray) -> float:
    """1 - k*/|a| with k* the smallest k such that every prediction from token k to the end is right."""
    n = len(matches)
    if n == 0:
        return 0.0
    wrong = np.flatnonzero(~np.asarray(matches, dtype=bool))
    first_of_correct_suffix = int(wrong[-1]) + 1 if len(wrong) else 0
    return 1.0 - first_of_correct_suffix / n
