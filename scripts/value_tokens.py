"""Where a truth ratio moves: the forget answers' NLL split into the value tokens and the template tokens.

A TOFU truth ratio compares a question's perturbed answers with its paraphrased answer; in a generated world
(data/world.py) both share the template and differ in the value only. Per forget item, the tokens where the
paraphrased answer and a perturbed one differ (a difflib token alignment) are that answer's value tokens; the rest are
shared. The script prints the mean NLL of the true value, of the wrong values and of the shared tokens, the share of
first true-value tokens the model is unsure of (entropy above ALTER's threshold) and the truth ratios' median.

    python3 scripts/value_tokens.py MODEL [ADAPTER] --data WORLD [--precision bf16]

docs/method.md ("What forget quality reads") shows its output for the target, retain model, NPO and ALTER runs.
"""

from __future__ import annotations

import argparse
import difflib
import json

import numpy as np

from alter.entropy import EntropySettings


def differing_tokens(first: list[int], second: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per token of each sequence, whether it lies outside every run of tokens the two share."""
    first_differs, second_differs = np.ones(len(first), bool), np.ones(len(second), bool)
    for i, j, size in difflib.SequenceMatcher(None, first, second, autojunk=False).get_matching_blocks():
        first_differs[i : i + size] = False
        second_differs[j : j + size] = False
    return first_differs, second_differs


def item_split(true_ids: list[int], true_logprobs: np.ndarray, true_entropy: np.ndarray,
               wrong: list[tuple[list[int], np.ndarray]]) -> dict:
    """One item's mean NLL of the true value, the wrong values and the shared tokens (each averaged over the perturbed
    answers), and the entropy at the true value's first token."""
    parts = {"true_value": [], "wrong_value": [], "shared": [], "first_value_entropy": []}
    for wrong_ids, wrong_logprobs in wrong:
        true_differs, wrong_differs = differing_tokens(true_ids, wrong_ids)
        if not true_differs.any() or not wrong_differs.any():
            continue
        parts["true_value"].append(-true_logprobs[true_differs].mean())
        parts["wrong_value"].append(-wrong_logprobs[wrong_differs].mean())
        parts["shared"].append(-true_logprobs[~true_differs].mean())
        parts["first_value_entropy"].append(true_entropy[int(np.argmax(true_differs))])
    return {key: float(np.mean(values)) if values else float("nan") for key, values in parts.items()}


def main() -> None:
    from alter.adapters.loading import load_model_with_adapter
    from alter.data.formatting import encode_qa
    from alter.data.tofu import TofuData
    from alter.evaluation.scoring import score_answers
    from alter.metrics.probability import truth_ratio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("adapter", nargs="?")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="forget10_perturbed")
    parser.add_argument("--precision", default="bf16")
    args = parser.parse_args()
    model, tokenizer = load_model_with_adapter(args.model, args.adapter, precision=args.precision)
    rows = TofuData(args.data).load(args.split)
    items = [encode_qa(tokenizer, row["question"], answer) for row in rows
             for answer in [row["paraphrased_answer"], *row["perturbed_answer"]]]
    scores = score_answers(model.eval(), items, tokenizer.pad_token_id or 0, precision=args.precision)
    splits, ratios, start = [], [], 0
    for row in rows:
        count = 1 + len(row["perturbed_answer"])
        answers = [(items[k].input_ids[items[k].prompt_length :], scores[k]) for k in range(start, start + count)]
        (true_ids, true), wrong = answers[0], answers[1:]
        splits.append(item_split(true_ids, true.logprobs, true.entropy, [(ids, s.logprobs) for ids, s in wrong]))
        ratios.append(truth_ratio(true.nll, [s.nll for _, s in wrong]))
        start += count
    summary = {key: round(float(np.nanmean([s[key] for s in splits])), 3)
               for key in ("true_value", "wrong_value", "shared")}
    entropies = np.array([s["first_value_entropy"] for s in splits])
    summary["first_value_unsure"] = round(float(np.mean(entropies > EntropySettings().threshold)), 3)
    summary["truth_ratio_median"] = round(float(np.median(ratios)), 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
