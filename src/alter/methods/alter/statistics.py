"""What ALTER learns about the frozen target before training: per-position token entropies, each item's mean answer
log-probability (for the forget floor), each forget item's mean-pooled last hidden state (for the sub-domains), and
the hidden states the gate is fitted on. All come from batched frozen forwards (`frozen_batches`), run before the
adapter exists."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from alter.data.batching import collate, length_sorted_batches, width_multiple
from alter.data.formatting import EncodedQA
from alter.entropy import EntropySettings
from alter.models.precision import autocast
from alter.resources import release_freed_memory


@torch.no_grad()
def frozen_batches(model, items: list[EncodedQA], pad_id: int, precision: str, hidden: bool, batch_size: int = 16):
    """Yield (item indices, batch, output) for `items` in length-sorted batches: one frozen forward each. Freed pages
    go back to the system before each forward: a pass keeps each batch's gate states and frees the rest, glibc kept
    the freed pages between them, and a SmolLM2 ALTER run's peak came from that (docs/results.md, "ALTER's
    unlearning memory, returned pages")."""
    device = next(model.parameters()).device
    for indices in length_sorted_batches([len(item.input_ids) for item in items], batch_size):
        release_freed_memory()
        batch = collate([items[i] for i in indices], pad_id, multiple=width_multiple(precision))
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(precision, device):
            output = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           output_hidden_states=hidden, use_cache=False)
        yield indices, batch, output


@dataclass
class ItemStatistics:
    entropy: list[torch.Tensor]  # per item: entropy of each position's next-token distribution
    pooled: np.ndarray | None  # per item: mean of the last hidden state over its tokens
    features: list[np.ndarray] | None  # per item: hidden state at `feature_layer` ([tokens, hidden], for a gate)
    answer_logprob: np.ndarray | None  # per item: mean log-probability of its answer tokens (if asked for)


def item_statistics(model, items: list[EncodedQA], pad_id: int, precision: str, entropy: EntropySettings,
                    pooled: bool = False, feature_layer: int | None = None,
                    answer_logprob: bool = False) -> ItemStatistics:
    """One frozen pass over `items`."""
    entropies: list = [None] * len(items)
    means: list = [None] * len(items)
    features: list = [None] * len(items)
    logprobs = np.zeros(len(items)) if answer_logprob else None
    hidden = pooled or feature_layer is not None
    for indices, batch, output in frozen_batches(model, items, pad_id, precision, hidden):
        values = entropy.values(output.logits).cpu()
        state = None
        if feature_layer is not None:
            state = output.hidden_states[feature_layer].float()
        for row, index in enumerate(indices):
            n = len(items[index].input_ids)
            entropies[index] = values[row, :n]
            if logprobs is not None:
                logprobs[index] = _answer_logprob(output.logits[row], items[index])
            if pooled:
                means[index] = output.hidden_states[-1][row, :n].float().mean(0).cpu().numpy()
            if state is not None:
                features[index] = state[row, :n].cpu().numpy()
    return ItemStatistics(entropies, np.stack(means) if pooled else None,
                          features if feature_layer is not None else None, logprobs)


def hidden_features(model, items: list[EncodedQA], pad_id: int, precision: str, layer: int) -> list[np.ndarray]:
    """Each item's hidden state at `layer` ([tokens, hidden]), from a frozen pass of the transformer body alone: the
    output layer's logits, which the gate does not read, are the largest tensor of a pass over long chats."""
    features: list = [None] * len(items)
    for indices, _, output in frozen_batches(model.base_model, items, pad_id, precision, hidden=True):
        state = output.hidden_states[layer].float()
        for row, index in enumerate(indices):
            features[index] = state[row, : len(items[index].input_ids)].cpu().numpy()
    return features


def _answer_logprob(logits: torch.Tensor, item: EncodedQA) -> float:
    start, answer = item.prompt_length, torch.as_tensor(item.answer_ids, device=logits.device)
    scores = torch.log_softmax(logits[start - 1 : len(item.input_ids) - 1].float(), dim=-1)
    return scores.gather(-1, answer[:, None]).mean().item()
