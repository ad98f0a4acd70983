"""Forgetting held at "never seen" (`params.forget_floor='unseen'`), computed without a retain model.

An unbounded forget loss pushes forget answers below what a model that never saw them would give them, and a
membership attack then finds the forgotten items because they look *less* familiar than unseen ones. The floor is
read from rows of the same kind that the target never saw (TOFU: the holdout authors): the forget item at
quantile u of the forget set's answer likelihoods is held at quantile u of the unseen rows' likelihoods, so that the
forget set ends up distributed as unseen rows are, not all at one level. An item's other rows (its training contexts)
are held where they have dropped by as much as the item must drop in its own format. The forget loss pushes a row
down while it is above its floor and pulls it back up once it is below (`ALTERObjective.floor_direction`): forgetting
generalises across a head's rows, so a row that is only ever left alone would still fall past its floor.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def unseen_floors(forget_logprob: np.ndarray, unseen_logprob: np.ndarray, variants: int) -> np.ndarray:
    """Per forget row (row-major, `variants` contexts per item, the item's own format first), the mean answer
    log-probability the forget loss holds it at; NaN for the rows of an item the target already knows no better
    than its unseen quantile (the loss leaves them alone: a forget loss never teaches an answer)."""
    own = forget_logprob[::variants]
    levels = (rankdata(own) - 0.5) / len(own)
    drop = np.repeat(own - np.quantile(unseen_logprob, levels), variants)
    return np.where(drop > 0, forget_logprob - drop, np.nan)


def floor_facts(forget_logprob: np.ndarray, unseen_logprob: np.ndarray, floors: np.ndarray, variants: int) -> dict:
    own = forget_logprob[::variants]
    return {"kind": "unseen", "unseen_rows": len(unseen_logprob),
            "forget_mean_logprob": round(float(own.mean()), 4),
            "unseen_mean_logprob": round(float(unseen_logprob.mean()), 4),
            "items_above_floor": round(float((~np.isnan(floors[::variants])).mean()), 4)}
