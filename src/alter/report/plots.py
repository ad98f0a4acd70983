"""Matplotlib figures, written atomically as PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from alter.io import atomic_path

REFERENCE_STYLE = {"target": ("#c44e52", "s"), "retain": ("#55a868", "D")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    _pyplot().close(figure)


def entropy_histogram(values: np.ndarray, threshold: float, title: str, path: Path) -> None:
    counts, edges = np.histogram(values, bins=60)
    entropy_histogram_from_counts(edges, counts, threshold, title, path)


def entropy_histogram_from_counts(edges, counts, threshold: float, title: str, path: Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    edges = np.asarray(edges)
    axis.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4c72b0")
    axis.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold:g}")
    axis.set_xlabel("entropy of the distribution that predicts the token")
    axis.set_ylabel("tokens")
    axis.set_title(title)
    axis.legend()
    _save(figure, path)


def quality_utility(rows: dict[str, dict], path: Path) -> None:
    """Forget quality (log scale: it is a p-value) against model utility, one point per run."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, row in rows.items():
        quality, utility = row.get("forget_quality"), row.get("model_utility")
        if quality is None or utility is None:
            continue
        color, marker = REFERENCE_STYLE.get(name, ("#4c72b0", "o"))
        axis.scatter(max(quality, 1e-30), utility, s=70, color=color, marker=marker, zorder=3)
        axis.annotate(name, (max(quality, 1e-30), utility), textcoords="offset points", xytext=(6, 4), fontsize=9)
    axis.set_xscale("log")
    axis.axvline(0.1, color="#999999", linestyle=":", linewidth=1)
    axis.set_xlabel("forget quality (KS-test p-value against the retain model; higher is better)")
    axis.set_ylabel("model utility (higher is better)")
    axis.set_title("What each method forgot, and what it kept")
    axis.grid(alpha=0.3)
    _save(figure, path)


def training_curves(curves: dict[str, list[dict]], path: Path) -> None:
    """The loss of every run against its optimizer steps, one panel per run (losses differ in scale)."""
    plt = _pyplot()
    names = [name for name, curve in curves.items() if curve]
    columns = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names):
        curve = curves[name]
        steps = np.arange(1, len(curve) + 1)  # the phases of a run count their steps separately: number them anew
        axis.plot(steps, [point["loss"] for point in curve], color="#4c72b0")
        phases = [point.get("phase") for point in curve]
        for index in range(1, len(phases)):
            if phases[index] != phases[index - 1]:
                axis.axvline(index + 0.5, color="#999999", linestyle="--", linewidth=1)
        for phase in dict.fromkeys(p for p in phases if p):
            first = phases.index(phase)
            axis.annotate(phase, (first + 1, curve[first]["loss"]), textcoords="offset points", xytext=(2, 6),
                          fontsize=8, color="#555555")
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("loss")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(names):]:
        axis.axis("off")
    _save(figure, path)
