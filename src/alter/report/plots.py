"""Matplotlib figures, written atomically as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alter.io import atomic_path


def entropy_histogram(values: np.ndarray, threshold: float, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.hist(values, bins=60, color="#4c72b0")
    axis.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold:g}")
    axis.set_xlabel("entropy of the distribution that predicts the token")
    axis.set_ylabel("tokens")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)
