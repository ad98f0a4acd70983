"""The TOFU suite: forget, retain, real-author and world-fact datasets, the holdout set for membership inference, and
the out-of-sample probes of the forget and retain questions (`evaluation/probes.py`). Definitions: docs/metrics.md
and ../shared/docs/benchmarks.md.

Per dataset, one scoring call covers every answer of a question (the answer, the paraphrased answer, the perturbed
answers: they share the prompt's pass) and one generation pass answers each question greedily. Every metric is then
a pure function (alter.metrics) of those outputs, which the per-item log keeps: all likelihoods and the generation.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from alter.data.formatting import DEFAULT_CONTEXT, Context, encode_prompt, encode_qa
from alter.data.splits import few_shot_rows, holdout_split_for, retain_split_for
from alter.data.tofu import TofuData
from alter.errors import UserError
from alter.evaluation.probes import build_probe, parse_families
from alter.evaluation.runner import DatasetSpec, Generation, Outputs
from alter.evaluation.suites.base import Suite
from alter.metrics import aggregate, memorization, privacy, probability
from alter.metrics.rouge import rouge_l

# 3: out-of-sample probes, every likelihood in the per-item log, gate rates, machine facts; 4: the follow_up probe.
VERSION = 4
BASE = (("forget", "paraphrased_answer"), ("retain", "paraphrased_answer"), ("ra", "answer"), ("wf", "answer"))
TABLE_KEYS = ("forget_quality", "model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "retain_Q_A_Prob",
              "retain_Q_A_ROUGE", "privleak")


def splits(forget_split: str) -> dict[str, str]:
    return {"forget": f"{forget_split}_perturbed", "retain": "retain_perturbed", "ra": "real_authors_perturbed",
            "wf": "world_facts_perturbed"}


def datasets(options: dict, tokenizer) -> list[DatasetSpec]:
    data = TofuData(options["data"])
    forget_split = options.get("forget_split", "forget10")
    holdout = holdout_split_for(forget_split)
    names = splits(forget_split)
    specs = [_answer_dataset(key, data.load(names[key]), correct, DEFAULT_CONTEXT, token_view=key in ("forget", "retain"))
             for key, correct in BASE]
    if data.has(holdout):
        specs.append(DatasetSpec("holdout", data.load(holdout), _holdout_item,
                                 sequences=lambda tok, row: [encode_qa(tok, row["question"], row["answer"])]))
    families = parse_families(options.get("probes", "all"))
    if families:
        few_shot = _few_shot_rows(data, forget_split, names)
        per_subject = TofuData.questions_per_author(options["data"])
        for key in ("forget", "retain"):
            for family in families:
                probe = build_probe(family, data.load(names[key]), few_shot, tokenizer, per_subject)
                name = f"{key}_probe_{family}"
                if probe.rows is None:
                    specs.append(DatasetSpec(name, [], _holdout_item, notes=[probe.note]))
                else:
                    specs.append(_answer_dataset(name, probe.rows, "paraphrased_answer", probe.context))
    return specs


def _few_shot_rows(data: TofuData, forget_split: str, names: dict) -> list[dict]:
    """The few-shot probe's turns: retain rows outside every evaluated set (data/splits.py)."""
    evaluated = {row["question"] for key in ("forget", "retain") for row in data.load(names[key])}
    return few_shot_rows(data.load(retain_split_for(forget_split)), evaluated)


def _answer_dataset(key: str, rows: list[dict], correct: str, context: Context, token_view: bool = False) -> DatasetSpec:
    def sequences(tokenizer, row):
        answers = [row["answer"]] + ([] if correct == "answer" else [row[correct]]) + list(row["perturbed_answer"])
        return [encode_qa(tokenizer, row["question"], answer, row.get("context", context)) for answer in answers]

    return DatasetSpec(key, rows, partial(_answer_item, correct), sequences,
                       Generation(lambda tokenizer, row: encode_prompt(tokenizer, row["question"],
                                                                       row.get("context", context))),
                       token_view=token_view)


def _answer_item(correct: str, row: dict, outputs: Outputs) -> dict:
    answer = outputs.scores[0]
    correct_scores = answer if correct == "answer" else outputs.scores[1]
    wrong_nll = [s.nll for s in outputs.scores[1 if correct == "answer" else 2 :]]
    rouge = rouge_l(outputs.generation, row["answer"])
    matches = answer.argmax_match[:-1]  # the final label token is EOS, excluded from memorisation metrics
    return {
        "question": row["question"], "answer": row["answer"], "generation": outputs.generation,
        "nll": answer.nll, "nll_correct": correct_scores.nll, "nll_wrong": wrong_nll,
        "prob": probability.answer_probability(answer.nll),
        "prob_normalised": probability.normalised_probability(answer.nll, wrong_nll),
        "truth_ratio": probability.truth_ratio(correct_scores.nll, wrong_nll),
        "rouge_recall": rouge["recall"], "rouge_f1": rouge["f1"],
        "extraction_strength": memorization.extraction_strength(matches),
        "exact_memorization": memorization.exact_memorization(matches),
        "mia": attack_scores(answer, row["answer"]),
    }


def _holdout_item(row: dict, outputs: Outputs) -> dict:
    scores = outputs.scores[0]
    return {"question": row["question"], "nll": scores.nll, "mia": attack_scores(scores, row["answer"])}


def attack_scores(scores, text: str) -> dict[str, float]:
    return {
        "loss": privacy.loss_score(scores.logprobs),
        "zlib": privacy.zlib_score(scores.logprobs, text),
        "min_k": privacy.min_k_score(scores.logprobs),
        "min_k_plus_plus": privacy.min_k_plus_plus_score(scores.logprobs, scores.expected_logprob, scores.std_logprob),
    }


# --- aggregates ---------------------------------------------------------------------------------------------------


def _items(log: dict, key: str) -> list[dict]:
    return list(log[key]["items"].values())


def _mean(log: dict, key: str, field: str) -> float:
    return float(np.mean([item[field] for item in _items(log, key)]))


def _truth_ratios(log: dict, key: str) -> list[float]:
    return [item["truth_ratio"] for item in _items(log, key)]


def summarize(log: dict, reference: dict | None = None) -> tuple[dict, list[str]]:
    """TOFU_SUMMARY from a per-item log; `notes` say why a key is null."""
    notes: list[str] = []
    summary: dict[str, float | None] = {
        "forget_Q_A_Prob": _mean(log, "forget", "prob"),
        "forget_Q_A_ROUGE": _mean(log, "forget", "rouge_recall"),
        "forget_truth_ratio": float(np.mean([probability.forget_truth_score(t) for t in _truth_ratios(log, "forget")])),
        "forget_quality": None,
        "model_utility": None,
    }
    for prefix, prob_key, tr_key in (("retain", "retain_Q_A_Prob", "retain_Truth_Ratio"),
                                     ("ra", "ra_Q_A_Prob_normalised", "ra_Truth_Ratio"),
                                     ("wf", "wf_Q_A_Prob_normalised", "wf_Truth_Ratio")):
        summary[prob_key] = _mean(log, prefix, "prob" if prefix == "retain" else "prob_normalised")
        summary[f"{prefix}_Q_A_ROUGE"] = _mean(log, prefix, "rouge_recall")
        summary[tr_key] = float(np.mean([probability.utility_truth_score(t) for t in _truth_ratios(log, prefix)]))
    summary["model_utility"] = aggregate.model_utility(summary)
    summary["extraction_strength"] = _mean(log, "forget", "extraction_strength")
    summary["exact_memorization"] = _mean(log, "forget", "exact_memorization")
    if reference is None:
        notes.append("forget_quality and privleak need the retain model's log: pass --retain-logs PATH/TOFU_EVAL.json")
    else:
        summary["forget_quality"] = aggregate.forget_quality(_truth_ratios(log, "forget"),
                                                             _truth_ratios(reference, "forget"))
    if "holdout" in log:
        for attack in ("loss", "zlib", "min_k", "min_k_plus_plus"):
            summary[f"mia_{attack}"] = attack_auc(log, attack)
        summary["privleak"] = None
        if reference is not None and "holdout" in reference:
            summary["privleak"], note = privacy.privleak_or_note(summary["mia_min_k"], attack_auc(reference, "min_k"))
            notes += [note] if note else []
    else:
        notes.append(f"no {log['meta'].get('holdout_split', 'holdout')} split in the data: MIA keys and privleak "
                     "skipped")
    summary.update(_probe_summary(log, reference, notes))
    summary.update(_gate_summary(log))
    return summary, list(dict.fromkeys(notes))


def _probe_summary(log: dict, reference: dict | None, notes: list[str]) -> dict:
    out: dict[str, float | None] = {}
    for key in [k for k in log if "_probe_" in k]:
        notes += log[key].get("notes", [])
        if not log[key]["items"]:
            continue
        side = key.split("_probe_")[0]
        out[f"{key}_Q_A_Prob"] = _mean(log, key, "prob")
        out[f"{key}_Q_A_ROUGE"] = _mean(log, key, "rouge_recall")
        if side == "forget":
            out[f"{key}_truth_ratio"] = float(np.mean([probability.forget_truth_score(t)
                                                        for t in _truth_ratios(log, key)]))
            same = reference is not None and reference.get(key, {}).get("items")
            out[f"{key}_forget_quality"] = aggregate.forget_quality(_truth_ratios(log, key), _truth_ratios(reference, key)) \
                if same else None
            if reference is not None and not same:
                notes.append(f"{key}_forget_quality: the retain log has no {key} items")
        else:
            out[f"{key}_Truth_Ratio"] = float(np.mean([probability.utility_truth_score(t)
                                                       for t in _truth_ratios(log, key)]))
    return out


def _gate_summary(log: dict) -> dict:
    """ALTER: per dataset, the share of answer tokens a forget head acted on (mean over items)."""
    return {f"{key}_gate_rate": float(np.mean([item["gate"] for item in _items(log, key)]))
            for key in log if key != "meta" and log[key]["items"] and "gate" in next(iter(log[key]["items"].values()))}


def attack_auc(log: dict, attack: str) -> float:
    members = [item["mia"][attack] for item in _items(log, "forget")]
    nonmembers = [item["mia"][attack] for item in _items(log, "holdout")]
    return privacy.attack_auc(members, nonmembers)


def check_reference(options: dict, settings, reference: dict) -> list[str]:
    """A retain log is compared item by item: refuse, before any evaluation, one of another forget split or item
    count; warn on another precision."""
    if "forget" not in reference or "items" not in reference.get("forget", {}):
        raise UserError("--retain-logs: not a TOFU_EVAL.json per-item log (no forget items)")
    theirs = reference.get("meta", {})
    if theirs.get("forget_split") not in (None, options["forget_split"]):
        raise UserError(f"--retain-logs: the retain log is of {theirs.get('forget_split')}, this evaluation of "
                        f"{options['forget_split']}")
    count = len(TofuData(options["data"]).load(f"{options['forget_split']}_perturbed"))
    count = min(count, settings.limit) if settings.limit else count
    if len(reference["forget"]["items"]) != count:
        raise UserError(f"--retain-logs: the retain log has {len(reference['forget']['items'])} forget items, this "
                        f"evaluation {count} (same data, split and --limit are needed)")
    if theirs.get("precision") not in (None, settings.precision):
        return [f"the retain log was computed in {theirs['precision']}, this evaluation in {settings.precision}: "
                "per-item probabilities differ by a few percent between precisions"]
    return []


def prepare_options(options: dict) -> dict:
    """Check the options before any model is loaded; add what the log should record."""
    forget_split = options.get("forget_split", "forget10")
    parse_families(options.get("probes", "all"))
    TofuData(options["data"]).load(f"{forget_split}_perturbed")  # a missing or malformed split fails here
    return {**options, "forget_split": forget_split, "holdout_split": holdout_split_for(forget_split)}


SUITE = Suite("tofu", "TOFU_EVAL.json", "TOFU_SUMMARY.json", VERSION, prepare_options, datasets, summarize,
              check_reference, TABLE_KEYS)
