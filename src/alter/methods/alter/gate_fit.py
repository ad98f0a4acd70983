"""Fitting ALTER's whole-model gates before training (docs/method.md, "The gate").

`fit_content_gate`: a linear detector over the hidden state entering the gate layer, one score per sub-domain and
token, trained so that its running max over positions <= t is positive at every answer position of a forget item
of that sub-domain and negative everywhere in retain items (other sub-domains' forget items are left free). The
loss is binary cross-entropy on the running max (multiple-instance learning: any token of the context may carry the
evidence), with positives and negatives weighted equally per head. The prompt positions of a forget item are left
free: the gate may switch on as soon as the subject is named, or later.

`fit_shared_router`: the previous default, a multinomial logistic regression from the running mean of the frozen
last hidden state to "no forget head" or a sub-domain (sklearn).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from alter.adapters.gates import ContentGate, SharedRouter


def _padded(arrays: list[np.ndarray], width: int) -> torch.Tensor:
    out = torch.zeros(len(arrays), width, arrays[0].shape[-1])
    for row, array in enumerate(arrays):
        out[row, : len(array)] = torch.as_tensor(array, dtype=torch.float32)
    return out


def _moments(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation over every token of every item, accumulated item by item (in float64):
    their concatenation was a copy of every state the fit reads."""
    count = sum(len(array) for array in arrays)
    total = sum(array.sum(0, dtype=np.float64) for array in arrays)
    squares = sum(np.square(array, dtype=np.float64).sum(0) for array in arrays)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std + 1e-6, dtype=torch.float32)


def _length_buckets(lengths: list[int], size: int = 64) -> list[np.ndarray]:
    """Items of similar length together, `size` at a time, each bucket padded to its own longest item: one width for
    every item made chats of several exchanges pad every single exchange to their length (the fit's largest tensor)."""
    order = np.argsort(lengths, kind="stable")
    return [order[start : start + size] for start in range(0, len(order), size)]


def content_gate_targets(forget_lengths: list[tuple[int, int]], domains: np.ndarray, retain_lengths: list[int],
                         heads: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and weights [items, width, heads] for forget items (given as (length, prompt length)) then retain items:
    1 at the answer positions of the item's own head, 0 at every retain position; weight 0 at padding, at the own
    head's prompt positions and everywhere for the other heads of a forget item. A head is not asked to stay off on
    other sub-domains' forget items: sub-domains split the forget set by form (k-means on pooled states) as much as by
    subject, and a detector made to tell them apart keys on the question's form, which reworded questions and other
    subjects' questions of that form share (docs/method.md, "The gate")."""
    rows = len(forget_lengths) + len(retain_lengths)
    targets, known = torch.zeros(rows, width, heads), torch.zeros(rows, width, heads)
    for row, ((length, prompt), domain) in enumerate(zip(forget_lengths, domains)):
        known[row, prompt - 1 : length, domain] = 1
        targets[row, prompt - 1 : length, domain] = 1
    for offset, length in enumerate(retain_lengths):
        known[len(forget_lengths) + offset, :length] = 1
    return targets, known


def fit_content_gate(gate: ContentGate, forget: list[np.ndarray], forget_prompts: list[int], domains: np.ndarray,
                     retain: list[np.ndarray], seed: int, calibration: list[np.ndarray] | None = None,
                     false_fire: float = 0.01, steps: int = 500, lr: float = 0.1, weight_decay: float = 1e-4,
                     draws: int = 1, hard_negative_refits: int = 0, min_recall: float = 0.0) -> dict:
    """Fit `gate.detector` in place on per-item hidden states ([tokens, hidden] each); return fit statistics.

    `draws` > 1: that many fits from different initialisations (seeds `seed`, `seed` + 1, ...), their detectors
    averaged (a linear detector again). Each fit's outcome is a draw: at the shipped rate it amplifies rounding, and
    where each draw misfires differs more than where it finds the forget subjects (docs/method.md).
    `hard_negative_refits` > 0: after a fit, every retain item of the fit on which a head switched on in this or an
    earlier fit (a hard negative) weighs for that head as much as one forget item of its sub-domain, and the detector
    is fitted again, that many times. Balanced per position, each forget answer position weighs as much as all
    negative positions over all positive ones (many), and the running max sends a forget item's gradient to its
    highest position: the fit could settle on a first name that a retain subject shares, firing on that subject's
    items as the price (world 7, docs/method.md, "Hard negatives").
    With `calibration` (retain items held out of the fit, e.g. other authors), each head's threshold is then raised
    until at most `false_fire` of those items switch a head on anywhere: the fit's in-sample negatives say little
    about text it never saw. `min_recall` > 0 caps each head's raise so that it stays on at that share (or more) of
    its own forget answer positions in the fit: a calibration item that shares a name with a forget subject can
    otherwise raise a threshold past every forget item (world 13, docs/method.md)."""
    arrays = forget + retain
    lengths = [len(a) for a in arrays]
    mean, std = _moments(arrays)
    heads = gate.detector.out_features // gate.parts
    targets, known = content_gate_targets([(len(f), p) for f, p in zip(forget, forget_prompts)], domains,
                                          [len(r) for r in retain], heads, max(lengths))
    positives = (targets * known).sum((0, 1))
    negatives = ((1 - targets) * known).sum((0, 1))
    weights = known * torch.where(targets > 0, negatives / positives.clamp_min(1), 1.0)
    buckets = []
    for rows in _length_buckets(lengths):
        width = max(lengths[row] for row in rows)
        x = _padded([arrays[row] for row in rows], width).sub_(mean).div_(std)  # in place: x is the largest thing held
        mask = torch.arange(width)[None] < torch.as_tensor([lengths[row] for row in rows])[:, None]
        buckets.append((rows, x, mask, targets[torch.as_tensor(rows), :width], known[torch.as_tensor(rows), :width]))
    hard = torch.zeros(len(retain), heads, dtype=torch.bool)  # every (item, head) any fit so far fired on
    hard_negatives = []
    for refit in range(hard_negative_refits + 1):
        fit_weights = _weigh_hard_negatives(weights, targets, len(forget), hard) if refit else weights
        loss = _fit_draws(gate, buckets, fit_weights, mean, std, seed, draws, steps, lr, weight_decay)
        with torch.no_grad():
            firing = _item_maxima(gate, retain) > 0 if retain else hard
        hard |= firing
        hard_negatives.append(int(firing.any(-1).sum()))
    with torch.no_grad():
        answer_scores, retain_scores = _fit_scores(gate, buckets, mean, std, len(forget))
        shift = _calibration_shift(gate, calibration, false_fire) if calibration else torch.zeros(heads)
        if min_recall > 0:
            shift = torch.minimum(shift, _recall_caps(answer_scores, min_recall)).clamp_min(0.0)
        gate.detector.bias.sub_(shift.repeat(gate.parts))
    recall_fitted, per_head_fitted = _recalls(answer_scores, torch.zeros(heads))
    recall, per_head = _recalls(answer_scores, shift)
    retain_fire_rate = float((retain_scores > shift).any(-1).float().mean()) if len(retain_scores) else 0.0
    facts = {"loss": loss, "forget_answer_recall": recall, "forget_answer_recall_before_calibration": recall_fitted,
             "forget_answer_recall_per_head": per_head,
             "forget_answer_recall_per_head_before_calibration": per_head_fitted, "retain_fire_rate": retain_fire_rate,
             "items": {"forget": len(forget), "retain": len(retain)},
             "steps": steps, "lr": lr, "draws": draws, "threshold_shift": shift.tolist(), "min_recall": min_recall,
             "hard_negatives": hard_negatives}
    if calibration:
        facts["calibration"] = {"items": len(calibration), "fire_rate": _fire_rate(gate, calibration)}
    return facts


def _weigh_hard_negatives(weights: torch.Tensor, targets: torch.Tensor, forget_count: int,
                          firing: torch.Tensor) -> torch.Tensor:
    """`weights` (balanced per position, before any refit) with each retain item on which head d fired (`firing`
    [retain items, N]) weighing, for head d, as much in all as the mean forget item of sub-domain d; its positions
    share that weight equally."""
    weights = weights.clone()
    positive = weights[:forget_count] * targets[:forget_count]
    own_items = (positive.sum(1) > 0).sum(0).clamp_min(1)  # forget items per head
    per_item = positive.sum((0, 1)) / own_items
    retain = weights[forget_count:]  # a view: setting it sets `weights`
    items, heads = firing.nonzero(as_tuple=True)
    real = (retain[items, :, heads] > 0).float()  # [hard negatives, width]
    retain[items, :, heads] = real * (per_item[heads] / real.sum(1).clamp_min(1))[:, None]
    return weights


def _fit_draws(gate: ContentGate, buckets: list, weights: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
               seed: int, draws: int, steps: int, lr: float, weight_decay: float) -> float:
    """Fit `draws` detectors under `weights` and set `gate.detector` to their average, the standardisation folded in;
    the draws' mean final loss."""
    weighted = [(x, mask, target, weights[torch.as_tensor(rows), : x.shape[1]]) for rows, x, mask, target, _ in buckets]
    fits = [_fit_detector(weighted, len(mean), gate, weights.sum(), seed + draw, steps, lr, weight_decay)
            for draw in range(draws)]
    with torch.no_grad():
        weight = torch.stack([detector.weight for detector, _ in fits]).mean(0) / std
        gate.detector.weight.copy_(weight)
        gate.detector.bias.copy_(torch.stack([detector.bias for detector, _ in fits]).mean(0) - weight @ mean)
    return sum(final for _, final in fits) / draws


def _fit_detector(buckets: list, features: int, gate: ContentGate, total_weight: torch.Tensor, seed: int, steps: int,
                  lr: float, weight_decay: float) -> tuple[torch.nn.Linear, float]:
    """One full-batch Adam fit of a detector shaped like `gate`'s over standardised states (a bucket at a time); its
    final loss. With several parts per head the loss reads their combination (the least running max), so a negative
    item pushes down only the part that fired least on it."""
    detector = torch.nn.Linear(features, gate.detector.out_features)
    with torch.no_grad():
        detector.weight.normal_(std=0.01, generator=torch.Generator().manual_seed(seed))
        detector.bias.fill_(-1.0)
    optimizer = torch.optim.Adam(detector.parameters(), lr=lr, weight_decay=weight_decay)
    loss = 0.0
    for _ in range(steps):
        optimizer.zero_grad()
        loss = 0.0
        for x, mask, target, item_weights in buckets:  # the gradient of the whole sum, a bucket at a time
            scores = detector(x).masked_fill(~mask[..., None], float("-inf"))
            pooled = gate.combined(scores.cummax(dim=1).values.clamp_min(-30.0))  # padding sits after the tokens
            part = F.binary_cross_entropy_with_logits(pooled, target, weight=item_weights, reduction="sum")
            part = part / total_weight
            part.backward()
            loss += float(part.detach())
        optimizer.step()
    return detector, loss


def _fit_scores(gate: ContentGate, buckets: list, mean: torch.Tensor, std: torch.Tensor,
                forget_count: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The fitted detector's running max, before any threshold raise: per head, at each of its own forget answer
    positions in the fit; and [retain positions, N] at every position of the fit's retain items. A raise of head d's
    threshold by s turns it off exactly where its running max is <= s (the bias moves every score alike)."""
    heads = gate.detector.out_features // gate.parts
    answer_scores, retain_scores = [[] for _ in range(heads)], []
    for rows, x, mask, target, seen in buckets:
        pooled = gate.combined(gate.pooled_scores(x * std + mean, mask))
        answer = (target > 0) & (seen > 0)
        for head in range(heads):
            answer_scores[head].append(pooled[..., head][answer[..., head]])
        is_retain = torch.as_tensor(rows >= forget_count)
        retain_scores.append(pooled[is_retain][mask[is_retain]])
    return [torch.cat(scores) for scores in answer_scores], torch.cat(retain_scores)


def _recall_caps(answer_scores: list[torch.Tensor], min_recall: float) -> torch.Tensor:
    """Per head, the largest threshold raise that leaves it on at `min_recall` or more of its own forget answer
    positions in the fit (+inf for a head without any)."""
    caps = torch.full((len(answer_scores),), float("inf"))
    for head, scores in enumerate(answer_scores):
        ranked = scores.sort(descending=True).values
        keep = math.ceil(min_recall * len(ranked) - 1e-9)  # positions that must stay above the raised threshold
        if keep > 0:  # just below the keep-th highest score (ties stay on), with room for the bias's rounding
            lowest_kept = ranked[keep - 1].item()
            caps[head] = lowest_kept - 1e-4 * max(1.0, abs(lowest_kept))
    return caps


def _recalls(answer_scores: list[torch.Tensor], shift: torch.Tensor) -> tuple[float, list[float]]:
    """After raising the thresholds by `shift`: the share of every head's own forget answer positions where it is on,
    and each head's share (1.0 for a head with no positions)."""
    on = [int((scores > raise_).sum()) for scores, raise_ in zip(answer_scores, shift.tolist())]
    counts = [len(scores) for scores in answer_scores]
    per_head = [hits / count if count else 1.0 for hits, count in zip(on, counts)]
    return sum(on) / max(sum(counts), 1), per_head


def _item_maxima(gate: ContentGate, items: list[np.ndarray]) -> torch.Tensor:
    """Each item's highest combined score per head, [items, N]: the running max at its last position."""
    return torch.stack([gate.combined(gate.scores(torch.as_tensor(item)[None], None)[0].amax(0)) for item in items])


def _calibration_shift(gate: ContentGate, items: list[np.ndarray], false_fire: float) -> torch.Tensor:
    """Per head, how far to raise the threshold so that at most `false_fire` of the calibration items switch any
    head on anywhere. A running max keeps a false positive for the rest of the sequence, so the rate that matters is
    per item, not per position; each of the N heads gets false_fire / N (a union bound)."""
    maxima = _item_maxima(gate, items)
    allowed = int(len(items) * false_fire / maxima.shape[1] + 1e-9)  # items each head may fire on
    return maxima.sort(dim=0, descending=True).values[allowed].clamp_min(0.0)


def _fire_rate(gate: ContentGate, items: list[np.ndarray]) -> float:
    """Share of `items` on which some head switches on."""
    return float((_item_maxima(gate, items) > 0).any(-1).float().mean())


def shared_router_targets(forget_lengths: list[tuple[int, int]], domains: np.ndarray, retain_lengths: list[int]):
    labels = [np.where(np.arange(n) >= prompt - 1, domain + 1, 0) for (n, prompt), domain in zip(forget_lengths, domains)]
    return labels + [np.zeros(n, int) for n in retain_lengths]


def fit_shared_router(router: SharedRouter, forget_means: list[np.ndarray], forget_prompts: list[int],
                      domains: np.ndarray, retain_means: list[np.ndarray], seed: int, null_output: bool) -> dict:
    """Multinomial logistic regression (sklearn, C 0.1, balanced classes) from running means to the training routes:
    answer positions of forget items -> their sub-domain, everything else -> 'no forget head'."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate(forget_means + retain_means)
    y = np.concatenate(shared_router_targets([(len(f), p) for f, p in zip(forget_means, forget_prompts)], domains,
                                             [len(r) for r in retain_means]))
    scaler = StandardScaler().fit(x)
    classifier = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced", random_state=seed)
    classifier.fit(scaler.transform(x), y)
    weight = classifier.coef_ / scaler.scale_
    bias = classifier.intercept_ - weight @ scaler.mean_
    if weight.shape[0] == 1:  # two classes (one sub-domain): sklearn keeps one row, for class 1
        weight, bias = np.concatenate([-weight / 2, weight / 2]), np.concatenate([-bias / 2, bias / 2])
    if not null_output:  # no 'none' output: the router chooses among the heads only
        weight, bias = weight[1:], bias[1:]
    with torch.no_grad():
        router.linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        router.linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    answer = y > 0
    return {"positions": int(len(y)),
            "answer_accuracy": float(np.mean(classifier.predict(scaler.transform(x[answer])) == y[answer]))}
