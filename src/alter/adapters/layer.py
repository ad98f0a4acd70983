"""`AlterLayer`: one adapted linear layer. `y = W0 x + s * (B_r + sum_d w_d B_fd) A x`, never merged into W0.

A is shared (r x in), each head B (out x r) starts at zero, so a fresh adapter leaves the model exactly equal to
its base. The weights w_d of the forget heads come from the `Routing` of the current forward:
- at inference, `Routing.weights` ([batch, seq, N], from the content gate or the shared router), or, for the
  'layer' router, this layer's own gate on its input with the temperature of each token's entropy class;
- in training, the routes the objective sets, with isolation by masks on the token axis: A learns only where
  `a_grad`, B_r only where `retain_grad`, forget head d only at tokens whose `head_grad` is d (its own sub-domain's
  tokens); everywhere else a head's output is detached. `router_tokens` marks tokens whose forget heads are
  weighted by this layer's router softmax instead of the given routes (the router then learns from the loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from alter.adapters.config import AlterConfig
from alter.models.families import linear_features


ALL_HEADS = -1  # `head_grad` value: every forget head may learn at this token


@dataclass
class Routing:
    """Per-token instructions for one forward pass; every tensor is [batch, seq] unless noted."""

    high: torch.Tensor  # entropy class of each token
    weights: torch.Tensor | None = None  # forget-head weights [batch, seq, N]; None = each layer's router decides
    # training only:
    a_grad: torch.Tensor | None = None
    retain_grad: torch.Tensor | None = None
    head_grad: torch.Tensor | None = None  # the forget head (1..N) that may learn at each token, 0 none, -1 all
    router_tokens: torch.Tensor | None = None
    router_target: torch.Tensor | None = None  # router output to learn (-100 = none), cross-entropy
    router_loss: torch.Tensor | float = 0.0  # summed over layers during the forward
    shared_gates: torch.Tensor | None = None  # inference: `head_gates(weights)`, made once for every layer

    @property
    def training(self) -> bool:
        return self.a_grad is not None

    def gates(self, weights: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`head_gates(weights)` in `dtype`; when every layer uses the shared `weights`, made once per forward."""
        if weights is not self.weights:
            return head_gates(weights).to(dtype)
        if self.shared_gates is None or self.shared_gates.dtype != dtype:
            self.shared_gates = head_gates(weights).to(dtype)
        return self.shared_gates


class RoutingSlot:
    """Shared by every adapted layer of one model: the routing of the current forward, and an off switch."""

    def __init__(self):
        self.routing: Routing | None = None
        self.enabled = True
        self.recorded: list[torch.Tensor] | None = None  # when a list: each forward's forget-head weights


class AlterLayer(nn.Module):
    def __init__(self, base: nn.Module, config: AlterConfig, slot: RoutingSlot):
        super().__init__()
        self.base, self.config, self.slot = base, config, slot
        in_features, out_features = linear_features(base)
        r, n = config.rank, config.forget_heads
        self.lora_A = nn.Parameter(torch.empty(r, in_features, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.retain_B = nn.Parameter(torch.zeros(out_features, r, device=base.weight.device))
        self.forget_B = nn.Parameter(torch.zeros(n, out_features, r, device=base.weight.device))
        self.router = nn.Parameter(torch.zeros(config.router_outputs, in_features, device=base.weight.device)) \
            if config.router == "layer" else None
        self._inference_key, self._inference_cache = None, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        routing = self.slot.routing
        if not self.slot.enabled or routing is None:
            return out
        if not routing.training:
            return out + self._infer_delta(x, routing).to(out.dtype)
        h = F.linear(x, self.lora_A.to(x.dtype))
        return out + self.config.scale * self._train_delta(x, h, routing).to(out.dtype)

    def router_weights(self, x: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """This layer's gate: forget-head weights [.., N] at each token's temperature, top-k at inference."""
        logits = F.linear(x, self.router.to(x.dtype)).float()
        return route_weights(logits, high, self.config)

    def _train_delta(self, x, h, routing: Routing) -> torch.Tensor:
        """Every head in two matmuls over rank-sized inputs: the head-token pairs that learn go through the heads, the
        others through their detached copy. Masking per head at full width (each head's output twice) cost a SmolLM2
        run 190 MB of peak memory and 15% of its training time (docs/results.md, "ALTER's unlearning cost")."""
        h = torch.where(routing.a_grad[..., None], h, h.detach())
        gated = self._gate_heads(self._training_weights(x, routing), h)  # [.., 1 + N, r]
        heads = torch.arange(1, self.config.forget_heads + 1, device=h.device)
        learns = torch.cat([routing.retain_grad[..., None],
                            (routing.head_grad[..., None] == heads) | (routing.head_grad == ALL_HEADS)[..., None]], -1)
        learning = torch.where(learns[..., None], gated, 0.0).flatten(-2)
        resting = torch.where(learns[..., None], 0.0, gated).flatten(-2)
        stacked = self._stacked_heads().to(h.dtype)
        return F.linear(learning, stacked) + F.linear(resting, stacked.detach())

    def _training_weights(self, x, routing: Routing) -> torch.Tensor:
        """The routes the objective set; at `router_tokens`, this layer's router softmax instead (it learns there)."""
        weights = routing.weights
        if self.router is not None and routing.router_tokens is not None and routing.router_tokens.any():
            logits = F.linear(x.detach(), self.router.to(x.dtype)).float()
            soft = forget_columns(torch.softmax(logits / temperatures(routing.high, self.config), -1), self.config)
            weights = torch.where(routing.router_tokens[..., None], soft, weights)
            if routing.router_target is not None and (routing.router_target != -100).any():
                routing.router_loss = routing.router_loss + F.cross_entropy(
                    logits.flatten(0, 1), routing.router_target.flatten(), ignore_index=-100)
        return weights

    def _infer_delta(self, x, routing: Routing) -> torch.Tensor:
        weights = routing.weights if routing.weights is not None else self.router_weights(x, routing.high)
        if self.slot.recorded is not None:
            self.slot.recorded.append(weights.detach())
        dtype = compute_dtype_of(x)
        down, up = self._inference_weights(dtype)
        h = F.linear(x, down)
        return F.linear((routing.gates(weights, dtype)[..., :, None] * h[..., None, :]).flatten(-2), up)

    def _inference_weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """A and the scaled stacked heads in the compute dtype. Without gradients they are kept until a parameter
        changes, since generation would otherwise cast and stack them again for every token in every layer."""
        if torch.is_grad_enabled():
            return self.lora_A.to(dtype), (self.config.scale * self._stacked_heads()).to(dtype)
        key = (dtype, *((p.data_ptr(), p._version) for p in (self.lora_A, self.retain_B, self.forget_B)))
        if self._inference_key != key:
            self._inference_cache = (self.lora_A.detach().to(dtype),
                                     (self.config.scale * self._stacked_heads().detach()).to(dtype))
            self._inference_key = key
        return self._inference_cache

    @staticmethod
    def _gate_heads(weights: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """[h, w_1 h, ..., w_N h] per token ([.., 1 + N, r]): the retain head always acts, forget head d at weight w_d."""
        return head_gates(weights).to(h.dtype)[..., :, None] * h[..., None, :]

    def _stacked_heads(self) -> torch.Tensor:
        """[B_r | B_f1 | ... | B_fN] ([out, (1 + N) r]), so that one matmul applies every gated head."""
        return torch.cat([self.retain_B[None], self.forget_B]).permute(1, 0, 2).flatten(1)


def head_gates(weights: torch.Tensor) -> torch.Tensor:
    """[1, w_1, ..., w_N] per token: the retain head's weight, then the forget heads'."""
    return torch.cat([torch.ones_like(weights[..., :1]), weights], dim=-1)


def compute_dtype_of(x: torch.Tensor) -> torch.dtype:
    """The dtype a linear layer computes in on `x`: autocast's when it is on, else `x`'s own."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def temperatures(high: torch.Tensor, config: AlterConfig) -> torch.Tensor:
    return torch.where(high, config.temperature_high, config.temperature_low)[..., None]


def forget_columns(router_probs: torch.Tensor, config: AlterConfig) -> torch.Tensor:
    """Drop the 'no forget head' output (column 0) when the router has one."""
    return router_probs[..., 1:] if config.null_output else router_probs


def route_weights(router_logits: torch.Tensor, high: torch.Tensor, config: AlterConfig) -> torch.Tensor:
    """Forget-head weights [.., N] from router logits over its outputs: softmax at the token's temperature, then top-k
    (k = top_k_high for high-entropy tokens, 1 for low-entropy tokens), renormalised; with a null output, the
    weight it keeps is simply not given to any head."""
    probs = torch.softmax(router_logits / temperatures(high, config), dim=-1)
    ranks = probs.argsort(dim=-1, descending=True).argsort(dim=-1)
    keep = torch.where(high[..., None], ranks < config.top_k_high, ranks < 1)
    kept = probs * keep
    return forget_columns(kept / kept.sum(-1, keepdim=True).clamp_min(1e-12), config)
