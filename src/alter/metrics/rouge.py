"""ROUGE-L with Google's `rouge_score` (stemmer on), as TOFU (recall) and MUSE (F1) compute it."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> dict[str, float]:
    """{'recall': ..., 'f1': ...} of ROUGE-L between a generation and the reference answer."""
    score = _scorer().score(reference, prediction)["rougeL"]
    return {"recall": float(score.recall), "f1": float(score.fmeasure)}
