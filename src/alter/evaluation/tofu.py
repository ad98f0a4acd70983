"""The TOFU evaluation suite: per-item logs (TOFU_EVAL.json) and one number per key (TOFU_SUMMARY.json).

Each expensive quantity is computed once: one scoring pass per (dataset, answer field) and one generation pass per
dataset. Every metric is then a pure function of those per-item outputs (alter.metrics).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from alter.data.formatting import encode_prompt, encode_qa
from alter.data.tofu import TofuData
from alter.errors import UserError
from alter.evaluation.generation import greedy_generate
from alter.evaluation.scoring import AnswerScores, score_answers
from alter.io import read_json, write_json
from alter.metrics import aggregate, memorization, privacy, probability
from alter.metrics.rouge import rouge_l
from alter.models.precision import machine_facts
from alter.training.resources import library_versions, peak_memory_mb


# Bump when a change moves any number the suite writes (bf16 noise included): benches key their cached evaluations
# on it, so a table never mixes logs of two versions. 2: prompt-sharing scoring, early-leaving generation.
SUITE_VERSION = 2


@dataclass(frozen=True)
class DatasetSpec:
    prefix: str  # key prefix in the summary
    split: str
    truth_correct_field: str  # the answer that truth ratio compares the wrong answers with


@dataclass
class EvalSettings:
    batch_size: int = 16
    generation_batch_size: int = 64  # decoding on CPU is overhead-bound: 64 sequences give 1.5x the tokens/s of 16
    max_new_tokens: int = 200
    limit: int | None = None
    precision: str = "fp32"
    token_view: int = 8  # forget and retain items whose answer tokens are logged one by one (for the report)


def dataset_specs(forget_split: str) -> list[DatasetSpec]:
    return [
        DatasetSpec("forget", f"{forget_split}_perturbed", "paraphrased_answer"),
        DatasetSpec("retain", "retain_perturbed", "paraphrased_answer"),
        DatasetSpec("ra", "real_authors_perturbed", "answer"),
        DatasetSpec("wf", "world_facts_perturbed", "answer"),
    ]


def holdout_split(forget_split: str) -> str:
    match = re.fullmatch(r"forget(\d+)", forget_split)
    if not match:
        raise UserError(f"--forget-split: expected forgetXX (e.g. forget10), got {forget_split!r}")
    return f"holdout{match.group(1)}"


class TofuEvaluation:
    """Under `accelerate launch` each process evaluates every `world`-th item (`rank` first) and the per-item logs
    are gathered, so every process ends with the whole log."""

    def __init__(self, model, tokenizer, data: TofuData, forget_split: str, settings: EvalSettings,
                 rank: int = 0, world: int = 1):
        self.model, self.tokenizer, self.data = model, tokenizer, data
        self.forget_split, self.settings = forget_split, settings
        self.rank, self.world = rank, world
        holdout = holdout_split(forget_split)
        self.holdout = holdout if data.has(holdout) else None

    def _rows(self, split: str) -> list[dict]:
        rows = self.data.load(split)
        return rows[: self.settings.limit] if self.settings.limit else rows

    def _score(self, pairs: list[tuple[str, str]], desc: str) -> list[AnswerScores]:
        items = [encode_qa(self.tokenizer, q, a) for q, a in pairs]
        with tqdm(total=len(items), desc=desc, leave=False) as bar:
            return score_answers(self.model, items, self.tokenizer.pad_token_id, self.settings.batch_size,
                                 self.settings.precision, progress=bar)

    def _shard(self, rows: list[dict]) -> tuple[list[int], list[dict]]:
        mine = list(range(self.rank, len(rows), self.world))
        return mine, [rows[i] for i in mine]

    def _gathered(self, items: dict) -> dict:
        if self.world == 1:
            return items
        from accelerate.utils import gather_object

        merged = {key: value for part in gather_object([items]) for key, value in part.items()}
        return {key: merged[key] for key in sorted(merged, key=int)}

    def evaluate_dataset(self, spec: DatasetSpec) -> dict:
        indices, rows = self._shard(self._rows(spec.split))
        questions = [row["question"] for row in rows]
        # One scoring call for every answer of a question, so they share its prompt pass.
        fields = ["answer"] + ([] if spec.truth_correct_field == "answer" else [spec.truth_correct_field])
        pairs = [(q, row[field]) for field in fields for q, row in zip(questions, rows)]
        pairs += [(q, w) for q, row in zip(questions, rows) for w in row["perturbed_answer"]]
        scores = self._score(pairs, f"{spec.prefix}: score")
        answer, correct = scores[: len(rows)], scores[(len(fields) - 1) * len(rows) : len(fields) * len(rows)]
        wrong_flat = scores[len(fields) * len(rows) :]
        prompts = [encode_prompt(self.tokenizer, q) for q in questions]
        with tqdm(total=len(prompts), desc=f"{spec.prefix}: generate", leave=False) as bar:
            generations = greedy_generate(self.model, self.tokenizer, prompts, self.settings.max_new_tokens,
                                          self.settings.generation_batch_size, self.settings.precision, progress=bar)
        items, offset = {}, 0
        for position, (index, row) in enumerate(zip(indices, rows)):
            n_wrong = len(row["perturbed_answer"])
            wrong = wrong_flat[offset : offset + n_wrong]
            offset += n_wrong
            log = self._item_log(row, answer[position], correct[position], wrong, generations[position])
            if spec.prefix in ("forget", "retain") and index < self.settings.token_view:
                log["tokens"] = self._token_log(answer[position])
            items[str(index)] = log
        return {"split": spec.split, "items": self._gathered(items)}

    def _item_log(self, row: dict, answer: AnswerScores, correct: AnswerScores, wrong: list[AnswerScores],
                  generation: str) -> dict:
        wrong_nll = [w.nll for w in wrong]
        rouge = rouge_l(generation, row["answer"])
        matches = answer.argmax_match[:-1]  # the final label token is EOS, excluded from memorisation metrics
        return {
            "question": row["question"],
            "answer": row["answer"],
            "generation": generation,
            "nll": answer.nll,
            "prob": probability.answer_probability(answer.nll),
            "prob_normalised": probability.normalised_probability(answer.nll, wrong_nll),
            "truth_ratio": probability.truth_ratio(correct.nll, wrong_nll),
            "rouge_recall": rouge["recall"],
            "rouge_f1": rouge["f1"],
            "extraction_strength": memorization.extraction_strength(matches),
            "exact_memorization": memorization.exact_memorization(matches),
            "mia": self._attack_scores(answer, row["answer"]),
        }

    def token_logs(self, rows: list[dict]) -> list[dict]:
        """Per-token records of the ground-truth answers of `rows` (text, probability, entropy, ALTER route)."""
        return [self._token_log(s) for s in self._score([(r["question"], r["answer"]) for r in rows], "tokens")]

    def _token_log(self, scores: AnswerScores) -> dict:
        log = {"text": [self.tokenizer.decode([int(t)]) for t in scores.targets],
               "prob": np.exp(scores.logprobs.astype(float)).round(5).tolist(),
               "entropy": scores.entropy.astype(float).round(4).tolist()}
        if scores.route is not None:
            log.update(route=scores.route.tolist(), route_high=scores.route_high.tolist())
        return log

    @staticmethod
    def _attack_scores(scores: AnswerScores, text: str) -> dict[str, float]:
        return {
            "loss": privacy.loss_score(scores.logprobs),
            "zlib": privacy.zlib_score(scores.logprobs, text),
            "min_k": privacy.min_k_score(scores.logprobs),
            "min_k_plus_plus": privacy.min_k_plus_plus_score(scores.logprobs, scores.expected_logprob,
                                                             scores.std_logprob),
        }

    def evaluate_holdout(self) -> dict:
        indices, rows = self._shard(self._rows(self.holdout))
        scores = self._score([(r["question"], r["answer"]) for r in rows], "holdout: answers")
        items = {str(i): {"question": r["question"], "nll": s.nll, "mia": self._attack_scores(s, r["answer"])}
                 for i, r, s in zip(indices, rows, scores)}
        return {"split": self.holdout, "items": self._gathered(items)}

    def run(self) -> dict:
        started = time.perf_counter()
        log = {spec.prefix: self.evaluate_dataset(spec) for spec in dataset_specs(self.forget_split)}
        if self.holdout:
            log["holdout"] = self.evaluate_holdout()
        log["meta"] = {"suite_version": SUITE_VERSION, "forget_split": self.forget_split, "holdout_split": self.holdout,
                       "precision": self.settings.precision,
                       "machine": machine_facts(next(self.model.parameters()).device, self.settings.precision),
                       "max_new_tokens": self.settings.max_new_tokens,
                       "limit": self.settings.limit, "processes": self.world, "versions": library_versions(),
                       "wall_seconds": round(time.perf_counter() - started, 2),
                       "peak_memory_mb": round(peak_memory_mb(), 1)}
        return log


def _mean(log: dict, prefix: str, field: str) -> float:
    return float(np.mean([item[field] for item in log[prefix]["items"].values()]))


def _truth_ratios(log: dict) -> list[float]:
    return [item["truth_ratio"] for item in log["forget"]["items"].values()]


def summarize(log: dict, retain_log: dict | None = None) -> tuple[dict, list[str]]:
    """TOFU_SUMMARY from a per-item log; notes say why a key is null."""
    notes: list[str] = []
    summary: dict[str, float | None] = {
        "forget_Q_A_Prob": _mean(log, "forget", "prob"),
        "forget_Q_A_ROUGE": _mean(log, "forget", "rouge_recall"),
        "forget_truth_ratio": float(np.mean([probability.forget_truth_score(t) for t in _truth_ratios(log)])),
        "forget_quality": None,
        "model_utility": None,
    }
    for prefix, prob_key, tr_key in (("retain", "retain_Q_A_Prob", "retain_Truth_Ratio"),
                                     ("ra", "ra_Q_A_Prob_normalised", "ra_Truth_Ratio"),
                                     ("wf", "wf_Q_A_Prob_normalised", "wf_Truth_Ratio")):
        summary[prob_key] = _mean(log, prefix, "prob" if prefix == "retain" else "prob_normalised")
        summary[f"{prefix}_Q_A_ROUGE"] = _mean(log, prefix, "rouge_recall")
        truth = [probability.utility_truth_score(i["truth_ratio"]) for i in log[prefix]["items"].values()]
        summary[tr_key] = float(np.mean(truth))
    summary["model_utility"] = aggregate.model_utility(summary)
    summary["extraction_strength"] = _mean(log, "forget", "extraction_strength")
    summary["exact_memorization"] = _mean(log, "forget", "exact_memorization")
    if retain_log is None:
        notes.append("forget_quality and privleak need the retain model's log: pass --retain-logs PATH/TOFU_EVAL.json")
    else:
        summary["forget_quality"] = aggregate.forget_quality(_truth_ratios(log), _truth_ratios(retain_log))
    if "holdout" in log:
        for attack in ("loss", "zlib", "min_k", "min_k_plus_plus"):
            summary[f"mia_{attack}"] = attack_auc(log, attack)
        if retain_log is not None and "holdout" in retain_log:
            summary["privleak"] = privacy.privleak(summary["mia_min_k"], attack_auc(retain_log, "min_k"))
        else:
            summary["privleak"] = None
    else:
        notes.append(f"no {log['meta']['holdout_split'] or 'holdout'} split in the data: MIA keys and privleak skipped")
    return summary, notes


def attack_auc(log: dict, attack: str) -> float:
    members = [item["mia"][attack] for item in log["forget"]["items"].values()]
    nonmembers = [item["mia"][attack] for item in log["holdout"]["items"].values()]
    return privacy.attack_auc(members, nonmembers)


def load_retain_log(path: str | Path) -> dict:
    log = read_json(path)
    if not isinstance(log, dict) or "forget" not in log or "items" not in log.get("forget", {}):
        raise UserError(f"{path}: not a TOFU_EVAL.json per-item log (no forget items)")
    return log


def write_outputs(out: Path, log: dict, summary: dict, notes: list[str]) -> None:
    write_json(out / "TOFU_EVAL.json", log)
    write_json(out / "TOFU_SUMMARY.json", {**summary, "notes": notes, "precision": log["meta"]["precision"],
                                           "machine": log["meta"]["machine"]})


def format_table(summary: dict) -> str:
    width = max(len(key) for key in summary)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ---------"]
    for key, value in summary.items():
        shown = "null" if value is None else f"{value:.4g}"
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)
