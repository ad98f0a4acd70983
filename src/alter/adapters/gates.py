"""Whole-model gates: what decides, for every token, whether forget heads act (docs/method.md, "The gate").

`ContentGate` (the default router): a linear detector reads the hidden state entering decoder layer `gate_layer`,
one score per forget sub-domain and token, and the gate of sub-domain d is on at position t when some position
<= t scored above 0 (a running max). A mention of a forgotten subject switches its head on for the rest of the
sequence, and text added around it cannot dilute a maximum. Only layers from `gate_layer` on are adapted, so the
gate reads exactly the frozen model's state in training, scoring and generation alike, with no extra pass
(`AlterConfig.adapt_below_gate` adapts the layers before it too, and pays for a frozen pass over them).
With a turn marker (`AlterConfig.turn_marker`, the tokens that open a user turn), the running max restarts at each
user turn: a mention in an earlier exchange no longer keeps heads on for a later question.
With `parts` > 1 (`AlterConfig.gate_parts`), each sub-domain has that many detectors, and its gate is on at t only
when every one of them has fired at some position <= t (the least of their running maxima is above 0): one detector
alone learns one part of a name, and fires on anyone who shares it (docs/method.md, "Two detectors per head").

`NameGate` (router 'names'): forget heads on from the token that completes a name of their request's subjects.

`SharedRouter`: a linear gate on the running mean of the frozen model's last hidden state (positions <= t), the
previous default; it needs a frozen pass beside every forward.
"""

from __future__ import annotations

import torch
from torch import nn


class ContentGate(nn.Module):
    def __init__(self, hidden_size: int, heads: int, parts: int = 1):
        super().__init__()
        self.parts = parts
        self.detector = nn.Linear(hidden_size, heads * parts)  # outputs part-major: part p of head d is p * N + d
        self.requires_grad_(False)

    def scores(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Per-token detector scores [batch, seq, N * parts]; padding never fires."""
        scores = self.detector(hidden.to(self.detector.weight.dtype)).float()
        if mask is not None:
            scores = scores.masked_fill(~mask.bool()[..., None], float("-inf"))
        return scores

    @staticmethod
    def running_max(scores: torch.Tensor, carry: torch.Tensor | None,
                    starts: torch.Tensor | None = None) -> torch.Tensor:
        """Max over positions <= t, continuing from `carry` ([batch, N], the max before this chunk); with `starts`
        ([batch, seq], True where a user turn opens), over the positions from the last start <= t only."""
        if carry is not None:
            scores = torch.cat([carry[:, None], scores], dim=1)
            starts = None if starts is None else torch.cat([torch.zeros_like(starts[:, :1]), starts], dim=1)
        if starts is None or not starts.any():
            pooled = scores.cummax(dim=1).values
        else:  # each turn lifted by a constant far above any score, so the max cannot reach back past its start
            lift = starts.cumsum(dim=1).double()[..., None] * 1e6
            pooled = ((scores.double() + lift).cummax(dim=1).values - lift).to(scores.dtype)
        return pooled[:, 1:] if carry is not None else pooled

    @staticmethod
    def turn_starts(input_ids: torch.Tensor, marker: list[int]) -> torch.Tensor:
        """[batch, seq], True at the first token of each occurrence of `marker` (within this chunk)."""
        starts = torch.zeros_like(input_ids, dtype=torch.bool)
        found = occurrences(input_ids, marker)
        starts[:, : found.shape[1]] = found
        return starts

    @staticmethod
    def weights(pooled: torch.Tensor, mix: str = "sum") -> torch.Tensor:
        """Forget-head weights [.., N] from the running max of the scores: the heads above 0 are on, combined by
        `mix` (AlterConfig.head_mix)."""
        on = (pooled > 0).float()
        if mix == "mean":
            return on / on.sum(-1, keepdim=True).clamp_min(1.0)
        if mix == "strongest":
            return on * nn.functional.one_hot(pooled.argmax(-1), pooled.shape[-1]).float()
        return on

    def pooled_scores(self, hidden: torch.Tensor, mask: torch.Tensor | None = None,
                      carry: torch.Tensor | None = None, starts: torch.Tensor | None = None) -> torch.Tensor:
        """The running max of every detector's scores ([batch, seq, N * parts]; the carry of the next chunk is its
        last position); `combined` turns it into one score per head."""
        return self.running_max(self.scores(hidden, mask), carry, starts)

    def combined(self, pooled: torch.Tensor) -> torch.Tensor:
        """[.., N] from [.., N * parts]: per head, the least of its detectors' running maxima; head d is on where it
        is above 0 (`weights`). Lowering every part's bias by s lowers it by s."""
        if self.parts == 1:
            return pooled
        return pooled.unflatten(-1, (self.parts, -1)).amin(-2)


def occurrences(input_ids: torch.Tensor, pattern: list[int]) -> torch.Tensor:
    """[batch, seq - len(pattern) + 1]: True where `pattern` starts (empty when the chunk is shorter)."""
    width = max(input_ids.shape[1] - len(pattern) + 1, 0)
    found = torch.ones(input_ids.shape[0], width, dtype=torch.bool, device=input_ids.device)
    for offset, token in enumerate(pattern):
        found &= input_ids[:, offset : offset + width] == token
    return found


class NameGate:
    """Router 'names': a forget head is on from the token that completes the name of one of its request's forget
    subjects (`patterns`, token ids; `pattern_requests` and `head_requests` say which request each pattern and each
    head belongs to) to the end of the sequence. It reads the token ids alone: text around the name cannot move it,
    and a subject who shares one name part with a forget subject does not match. It misses a subject mentioned in
    other words (a surname alone, a misspelling, a description); what that costs is measured per probe family
    (docs/method.md, "Subjects' names decide (`router: names`)").

    With `partial` (per pattern, a prefix length k > 0), a name written up to at least its first k tokens also switches
    its heads on at the position it has reached, and off again where the text leaves the name: the heads then act
    while the name itself is being written, as when the name is the answer.

    Generation feeds a sequence a chunk at a time; the carry ([batch, heads] on so far, [batch, longest pattern - 1]
    last ids) finds a name split across chunks."""

    def __init__(self, patterns: list[list[int]], pattern_requests: list[int], head_requests: list[int],
                 partial: list[int] | None = None):
        self.patterns = [list(pattern) for pattern in patterns]
        self.partial = list(partial) if partial else [0] * len(self.patterns)
        self.tail = max(len(pattern) for pattern in self.patterns) - 1
        # [patterns, heads]: True where a pattern switches a head on
        self.switches = torch.tensor([[p == h for h in head_requests] for p in pattern_requests], dtype=torch.bool)

    def on(self, input_ids: torch.Tensor, mask: torch.Tensor | None,
           carry: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """[batch, seq, heads] True where a name of the head's request has been completed at or before the position;
        the carry for the next chunk. Padding (mask 0) never takes part in a name."""
        ids = input_ids if mask is None else input_ids.masked_fill(~mask.bool(), -1)
        switches = self.switches.to(ids.device)
        if carry is None:
            was_on = torch.zeros(len(ids), switches.shape[1], dtype=torch.bool, device=ids.device)
            tail = ids.new_full((len(ids), self.tail), -1)
        else:
            was_on, tail = carry
        ids = torch.cat([tail, ids], dim=1)
        ends = torch.zeros(*ids.shape, switches.shape[1], dtype=torch.bool, device=ids.device)
        writing = torch.zeros_like(ends)
        for pattern, heads, shortest in zip(self.patterns, switches, self.partial):
            _mark_ends(ends, ids, pattern, heads)
            for length in range(shortest, len(pattern)) if shortest else ():
                _mark_ends(writing, ids, pattern[:length], heads)
        on = (ends[:, self.tail :].cumsum(dim=1) > 0) | was_on[:, None]
        on_now = on | writing[:, self.tail :]
        return on_now, (on[:, -1], ids[:, ids.shape[1] - self.tail :])


def _mark_ends(marks: torch.Tensor, ids: torch.Tensor, pattern: list[int], heads: torch.Tensor) -> None:
    """Sets `heads` in `marks` ([batch, seq, heads]) at every position where `pattern` ends in `ids`."""
    found = occurrences(ids, pattern)
    marks[:, len(pattern) - 1 : len(pattern) - 1 + found.shape[1]] |= found[..., None] & heads


class SharedRouter(nn.Module):
    def __init__(self, hidden_size: int, outputs: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, outputs)
        self.requires_grad_(False)

    @staticmethod
    def running_mean(hidden: torch.Tensor, mask: torch.Tensor | None,
                     carry: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Mean of the hidden states over the real tokens at positions <= t, continuing from `carry` (sum, count);
        returns the means and the new carry."""
        hidden = hidden.float()
        mask = torch.ones(hidden.shape[:2], device=hidden.device) if mask is None else mask.float()
        sums, counts = (hidden * mask[..., None]).cumsum(1), mask.cumsum(1)
        if carry is not None:
            sums, counts = sums + carry[0][:, None], counts + carry[1][:, None]
        return sums / counts.clamp_min(1)[..., None], (sums[:, -1], counts[:, -1])

    def forward(self, means: torch.Tensor) -> torch.Tensor:
        return self.linear(means)


def linear_from(weight: torch.Tensor, bias: torch.Tensor, module: nn.Linear) -> None:
    with torch.no_grad():
        module.weight.copy_(torch.as_tensor(weight, dtype=module.weight.dtype))
        module.bias.copy_(torch.as_tensor(bias, dtype=module.bias.dtype))
