"""Forget sub-domains, one forget head each: k-means over the forget items' pooled hidden states (the paper), or the
data's subjects."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score


def choose_subdomains(pooled: np.ndarray, requested: int, max_heads: int, seed: int) -> tuple[np.ndarray, dict]:
    """k-means assignment of forget items to sub-domains; k given, or the best silhouette score in 2..max_heads."""
    n = len(pooled)
    scores: dict[int, float] = {}
    if requested > 0:
        k = min(requested, n)
    else:
        for candidate in range(2, min(max_heads, n - 1) + 1):
            labels = KMeans(n_clusters=candidate, n_init=10, random_state=seed).fit_predict(pooled)
            scores[candidate] = float(silhouette_score(pooled, labels))
        k = max(scores, key=scores.get) if scores else 1
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(pooled) if k > 1 else np.zeros(n, int)
    return labels, {"heads": int(k), "silhouette": scores, "sizes": np.bincount(labels, minlength=k).tolist()}


def subject_subdomains(groups: list[int]) -> tuple[np.ndarray, dict]:
    """One sub-domain per subject (e.g. TOFU author), numbered in order of first appearance."""
    order = {group: index for index, group in enumerate(dict.fromkeys(groups))}
    labels = np.array([order[group] for group in groups], dtype=int)
    return labels, {"heads": len(order), "silhouette": {}, "sizes": np.bincount(labels).tolist()}


def agreement_with_groups(domains: np.ndarray, groups: list[int] | None) -> float | None:
    """Adjusted Rand index between the sub-domains and the items' known subjects (TOFU: authors); 1 = the same
    partition, about 0 = unrelated."""
    if groups is None or len(set(groups)) < 2:
        return None
    return float(adjusted_rand_score(groups, domains))
