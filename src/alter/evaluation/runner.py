"""The expensive passes of every suite, run once per dataset: teacher-forced scoring of answer sequences, greedy
generation, and multiple choice (scoring one short continuation per option). A suite declares its datasets
(`DatasetSpec`: rows, what to score, what to generate, and the pure per-item function that turns those outputs into
the item's log); `run_datasets` runs them, under a launcher each process on every `world`-th row, and gathers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from alter.data.formatting import EncodedQA
from alter.entropy import EntropySettings
from alter.evaluation.generation import greedy_generate
from alter.evaluation.scoring import AnswerScores, score_answers


@dataclass
class EvalSettings:
    batch_size: int = 16
    generation_batch_size: int = 64  # decoding on CPU is overhead-bound: 64 sequences give 1.5x the tokens/s of 16
    max_new_tokens: int = 200
    limit: int | None = None
    precision: str = "fp32"
    token_view: int = 8  # items of a dataset with `token_view` whose answer tokens are logged one by one


@dataclass
class Generation:
    prompt: Callable  # (tokenizer, row) -> prompt token ids
    max_new_tokens: int | None = None  # None: the settings' cap
    stop: tuple[str, ...] = ()  # the generation is cut at the first of these strings


@dataclass
class Outputs:
    scores: list[AnswerScores]  # in the order `DatasetSpec.sequences` gave them
    generation: str | None = None


@dataclass
class DatasetSpec:
    key: str
    rows: list[dict]
    item: Callable  # (row, Outputs) -> the item's log (pure metric calls)
    sequences: Callable | None = None  # (tokenizer, row) -> list[EncodedQA] to score
    generation: Generation | None = None
    token_view: bool = False
    notes: list[str] = field(default_factory=list)


def run_datasets(model, tokenizer, specs: list[DatasetSpec], settings: EvalSettings, rank: int = 0,
                 world: int = 1) -> dict:
    return {spec.key: run_dataset(model, tokenizer, spec, settings, rank, world) for spec in specs}


def run_dataset(model, tokenizer, spec: DatasetSpec, settings: EvalSettings, rank: int, world: int) -> dict:
    started = time.perf_counter()
    rows = spec.rows[: settings.limit] if settings.limit else spec.rows
    indices = list(range(rank, len(rows), world))
    mine = [rows[i] for i in indices]
    scores = _score(model, tokenizer, spec, mine, settings)
    generations = _generate(model, tokenizer, spec, mine, settings)
    items = {}
    for position, (index, row) in enumerate(zip(indices, mine)):
        outputs = Outputs(scores[position], generations[position] if generations else None)
        log = spec.item(row, outputs)
        if outputs.scores and outputs.scores[0].route is not None:
            log["gate"] = float(np.mean(outputs.scores[0].route > 0))  # share of answer tokens a forget head acted on
        if spec.token_view and index < settings.token_view and outputs.scores:
            log["tokens"] = token_record(tokenizer, outputs.scores[0])
        items[str(index)] = log
    return {"items": _gathered(items, world), "seconds": round(time.perf_counter() - started, 2),
            **({"notes": spec.notes} if spec.notes else {})}


def _score(model, tokenizer, spec: DatasetSpec, rows: list[dict], settings: EvalSettings) -> list[list[AnswerScores]]:
    if spec.sequences is None:
        return [[] for _ in rows]
    per_row = [spec.sequences(tokenizer, row) for row in rows]
    flat: list[EncodedQA] = [item for items in per_row for item in items]
    with tqdm(total=len(flat), desc=f"{spec.key}: score", leave=False) as bar:
        scored = score_answers(model, flat, tokenizer.pad_token_id, settings.batch_size, settings.precision,
                               progress=bar)
    out, offset = [], 0
    for items in per_row:
        out.append(scored[offset : offset + len(items)])
        offset += len(items)
    return out


def _generate(model, tokenizer, spec: DatasetSpec, rows: list[dict], settings: EvalSettings) -> list[str] | None:
    generation = spec.generation
    if generation is None:
        return None
    prompts = [generation.prompt(tokenizer, row) for row in rows]
    with tqdm(total=len(prompts), desc=f"{spec.key}: generate", leave=False) as bar:
        texts = greedy_generate(model, tokenizer, prompts, generation.max_new_tokens or settings.max_new_tokens,
                                settings.generation_batch_size, settings.precision, progress=bar)
    return [cut_at(text, generation.stop) for text in texts]


def cut_at(text: str, stops: tuple[str, ...]) -> str:
    for stop in stops:
        if stop in text:
            text = text[: text.index(stop)]
    return text.strip()


def token_record(tokenizer, scores: AnswerScores) -> dict:
    """Each answer token: its text, probability, entropy, class and (ALTER) forget head, for the report."""
    settings = EntropySettings()
    record = {"text": [tokenizer.decode([int(t)]) for t in scores.targets],
              "prob": np.exp(scores.logprobs.astype(float)).round(5).tolist(),
              "entropy": scores.entropy.astype(float).round(4).tolist(),
              "high": (scores.entropy > settings.threshold).tolist()}
    if scores.route is not None:
        record["route"] = scores.route.tolist()
    return record


def _gathered(items: dict, world: int) -> dict:
    if world == 1:
        return items
    from accelerate.utils import gather_object

    merged = {key: value for part in gather_object([items]) for key, value in part.items()}
    return {key: merged[key] for key in sorted(merged, key=int)}
