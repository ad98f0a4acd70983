"""One teacher-forced pass over (question, answer) pairs gives every likelihood-based quantity per item.

For each answer token t (label position, EOS included) we keep: log p(y_t), whether the teacher-forced argmax
equals y_t, and the mean and standard deviation of log p under the model's own distribution at that position
(Min-K%++). Metrics are pure functions of these arrays, so probability, truth ratio, forget quality, extraction
strength, exact memorisation and the MIA attacks all reuse one pass.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from alter.data.batching import collate, length_sorted_batches, pad_sequences
from alter.data.formatting import IGNORE_INDEX, EncodedQA
from alter.entropy import EntropySettings
from alter.models.outputs import forward_accepts, last_logit_only, logits_at
from alter.models.precision import autocast


@dataclass
class AnswerScores:
    logprobs: np.ndarray  # log p(y_t) for each answer token
    argmax_match: np.ndarray  # teacher-forced argmax == y_t
    expected_logprob: np.ndarray  # E_{v~p}[log p(v)] at each position
    std_logprob: np.ndarray  # std_{v~p}[log p(v)] at each position
    targets: np.ndarray  # the answer token ids
    entropy: np.ndarray  # entropy (EntropySettings' defaults) of the distribution that predicts each answer token
    route: np.ndarray | None = None  # ALTER: the forget head most layers used at each position (0 = none)

    @property
    def nll(self) -> float:
        """Mean negative log-likelihood over the answer tokens."""
        return float(-self.logprobs.mean())


def score_answers(model, items: list[EncodedQA], pad_id: int, batch_size: int = 16, precision: str = "fp32",
                  progress=None) -> list[AnswerScores]:
    """Scores of every item. Items that share a prompt (TOFU's answer, paraphrase and perturbed answers of one
    question) share one pass over it: its KV cache serves all of them, and an ALTER adapter's routing state at the
    prompt's end (`AlterModel.gate_state`: the gate's carry, and the KV cache of a frozen pass) starts each answer."""
    if forward_accepts(model, "cache"):
        return _score_sharing_prompts(model, items, pad_id, batch_size, precision, progress)
    return _score_whole_sequences(model, items, pad_id, batch_size, precision, progress)


@torch.no_grad()
def _score_sharing_prompts(model, items, pad_id, batch_size, precision, progress) -> list[AnswerScores]:
    sharing: dict[tuple, list[int]] = {}
    for index, item in enumerate(items):
        sharing.setdefault(tuple(item.input_ids[: item.prompt_length]), []).append(index)
    prompts = list(sharing)
    results: list[AnswerScores | None] = [None] * len(items)
    for batch in length_sorted_batches([len(p) for p in prompts], batch_size):
        prompt = PromptPass.run(model, [list(prompts[p]) for p in batch], pad_id, precision)
        members = [(row, index) for row, p in enumerate(batch) for index in sharing[prompts[p]]]
        members.sort(key=lambda member: -len(items[member[1]].input_ids))
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            answers = [items[index].input_ids[items[index].prompt_length :] for _, index in chunk]
            scores = prompt.score_continuations(model, [row for row, _ in chunk], answers, pad_id, precision)
            for (_, index), score in zip(chunk, scores):
                results[index] = score
        if progress is not None:
            progress.update(len(members))
    return results  # type: ignore[return-value]


@dataclass
class PromptPass:
    """One forward over a batch of left-padded prompts: its KV cache, and the logits that predict each first answer
    token."""

    cache: DynamicCache
    mask: torch.Tensor
    positions: torch.Tensor
    last_logits: torch.Tensor
    gate_state: object = None  # ALTER: the routing state at each prompt's end (`AlterModel.gate_state`)
    last_route: torch.Tensor | None = None  # ALTER: the forget head acting at each prompt's last position

    @classmethod
    def run(cls, model, prompts: list[list[int]], pad_id: int, precision: str) -> PromptPass:
        device = next(model.parameters()).device
        adapter = getattr(model, "alter", None)
        ids, mask = (t.to(device) for t in pad_sequences(prompts, pad_id, "left"))
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        cache = DynamicCache(config=model.config)
        with autocast(precision, device), (adapter.recording() if adapter else contextlib.nullcontext()):
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                           **last_logit_only(model)).logits
            if adapter is None:
                return cls(cache, mask, positions, logits[:, -1])
            return cls(cache, mask, positions, logits[:, -1], adapter.gate_state(), adapter.routes()[0][:, -1])

    def score_continuations(self, model, rows: list[int], answers: list[list[int]], pad_id: int,
                            precision: str) -> list[AnswerScores]:
        """Scores of `answers[k]` after prompt `rows[k]` (answer tokens only, EOS included)."""
        device = self.mask.device
        rows_index = torch.tensor(rows, device=device)
        answer_ids, answer_mask = (t.to(device) for t in pad_sequences(answers, pad_id))
        cache = copy.deepcopy(self.cache)  # the forward appends the answers; the prompt cache serves the next chunk
        cache.batch_select_indices(rows_index)
        positions = self.positions[rows_index, -1:] + 1 + torch.arange(answer_ids.shape[1], device=device)
        adapter = getattr(model, "alter", None)
        if adapter is not None:
            adapter.continue_from(self.gate_state, rows_index)
        with autocast(precision, device), (adapter.recording() if adapter else contextlib.nullcontext()):
            logits = model(input_ids=answer_ids, attention_mask=torch.cat([self.mask[rows_index], answer_mask], 1),
                           position_ids=positions, cache=cache, use_cache=True).logits
            route = adapter.routes()[0] if adapter else None
        scores = []
        for k, (row, answer) in enumerate(zip(rows, answers)):
            predicting = torch.cat([self.last_logits[row][None], logits[k, : len(answer) - 1]])
            scores.append(_answer_scores(torch.log_softmax(predicting.float(), -1), answer_ids[k, : len(answer)]))
            if route is not None:  # the position predicting each answer token: the prompt's last, then the answer's
                scores[-1].route = torch.cat([self.last_route[row][None], route[k, : len(answer) - 1]]).cpu().numpy()
        return scores


@torch.no_grad()
def _score_whole_sequences(model, items, pad_id, batch_size, precision, progress) -> list[AnswerScores]:
    device = next(model.parameters()).device
    runtime = getattr(model, "alter", None)
    results: list[AnswerScores | None] = [None] * len(items)
    for indices in length_sorted_batches([len(item.input_ids) for item in items], batch_size):
        batch = collate([items[i] for i in indices], pad_id, side="right")
        # Only positions that predict an answer token need the (vocabulary-sized) output layer.
        first = min(items[i].prompt_length for i in indices) - 1
        keep = torch.arange(first, batch["input_ids"].shape[1] - 1, device=device)
        with autocast(precision, device), (runtime.recording() if runtime else contextlib.nullcontext()):
            inputs = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}
            logits = logits_at(lambda **extra: model(**inputs, **extra), model, keep)
            route = runtime.routes()[0] if runtime else None
        logp = torch.log_softmax(logits.float(), dim=-1)
        labels = batch["labels"][:, first + 1 :].to(device)
        for row, index in enumerate(indices):
            positions = (labels[row] != IGNORE_INDEX).nonzero().squeeze(-1)
            results[index] = _answer_scores(logp[row, positions], labels[row, positions])
            if route is not None:
                at = positions + first  # the position predicting each answer token
                results[index].route = route[row, at].cpu().numpy()
        if progress is not None:
            progress.update(len(indices))
    return results  # type: ignore[return-value]


def _answer_scores(logp: torch.Tensor, targets: torch.Tensor) -> AnswerScores:
    probs = logp.exp()
    expected = (probs * logp).sum(-1)
    second_moment = (probs * logp.square()).sum(-1)
    std = (second_moment - expected.square()).clamp_min(0).sqrt()
    return AnswerScores(
        logprobs=logp.gather(-1, targets[:, None]).squeeze(-1).cpu().numpy(),
        argmax_match=(logp.argmax(-1) == targets).cpu().numpy(),
        expected_logprob=expected.cpu().numpy(),
        std_logprob=std.cpu().numpy(),
        targets=targets.cpu().numpy(),
        entropy=EntropySettings().values(logp).cpu().numpy(),
    )
