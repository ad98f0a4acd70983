"""The asymmetric adapter of ALTER: per target linear layer, one shared down-projection A, N forget heads
B_f1..B_fN, one retain head B_r, and a router. `y = W0 x + s * (B_r + sum_d w_d(x) B_fd) A x`, never merged.

The router is a per-layer gate on the layer input (the HydraLoRA reading of the paper, see docs/method.md) with
N + 1 outputs: output 0 is "no forget head", so text outside every forget sub-domain can leave the forget heads
off. Its softmax temperature follows the token's entropy class (0.8 high, 0.01 low); high-entropy tokens mix the
top-3 outputs, low-entropy tokens take the top-1. With `router="shared"` one gate for the whole model reads the
frozen model's last hidden state instead (fitted before training, see `alter.methods.alter.fit_shared_router`), and
the runtime hands every layer the same weights (`Routing.weights`).

Training does not use the router's choice: a `Routing` record says, per token, which forget head is on (hard,
by sub-domain) and which parameters may learn from the token. Isolation is by masks on the token axis:
- A learns only from high-entropy tokens (its output is detached elsewhere);
- forget head d learns only from tokens routed to d (low-entropy tokens of sub-domain d);
- the retain head learns only from tokens marked retain;
- the router learns to predict the training routes (a cross-entropy kept in `Routing.router_loss`) and, on the
  tokens marked `soft_route`, from the retain loss itself: the frozen forget heads are applied with the router's
  softmax there, so any leak of a forget head into retain text costs retain loss.
B heads start at zero, so a fresh adapter leaves the model exactly equal to the base model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# Linear layers that ALTER adapts, by architecture family (attention and MLP projections).
TARGET_NAMES = {
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),  # also Qwen, Mistral
    "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
}


@dataclass
class AsymmetricConfig:
    rank: int = 8
    alpha: float = 16.0
    forget_heads: int = 1
    top_k_high: int = 3
    temperature_high: float = 0.8
    temperature_low: float = 0.01
    entropy_threshold: float = 1.2
    target_modules: list[str] = field(default_factory=list)
    router: str = "layer"  # "layer": one gate per adapted layer; "shared": one gate on the frozen last hidden state

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Routing:
    """Per-token instructions for one forward pass (all [batch, seq] tensors).

    Training: `forget_head` holds the head index (1..N) a token is routed to, 0 for none; `a_grad`, `retain_grad`
    mark which tokens A and B_r may learn from; `router_target` (-100 = ignore) trains the router.
    Inference: only `high` (the entropy class) is set and the router decides."""

    high: torch.Tensor
    forget_head: torch.Tensor | None = None
    a_grad: torch.Tensor | None = None
    retain_grad: torch.Tensor | None = None
    router_target: torch.Tensor | None = None
    router_loss: torch.Tensor | float = 0.0
    weights: torch.Tensor | None = None  # inference with the shared router: gate weights [batch, seq, N + 1]
    soft_route: torch.Tensor | None = None  # tokens that see the frozen forget heads through the router's softmax

    @property
    def training(self) -> bool:
        return self.forget_head is not None


class RoutingSlot:
    """Shared by every adapted layer of one model: the routing of the current forward, and an off switch."""

    def __init__(self):
        self.routing: Routing | None = None
        self.enabled = True
        self.recorded: list[torch.Tensor] | None = None  # when a list: every layer's inference gate weights


class AsymmetricLinear(nn.Module):
    def __init__(self, base: nn.Module, config: AsymmetricConfig, slot: RoutingSlot):
        super().__init__()
        self.base, self.config, self.slot = base, config, slot
        in_features, out_features = _features(base)
        r, n = config.rank, config.forget_heads
        self.lora_A = nn.Parameter(torch.empty(r, in_features))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.retain_B = nn.Parameter(torch.zeros(out_features, r))
        self.forget_B = nn.Parameter(torch.zeros(n, out_features, r))
        self.router = nn.Parameter(torch.zeros(n + 1, in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        routing = self.slot.routing
        if not self.slot.enabled or routing is None:
            return out
        h = F.linear(x, self.lora_A.to(x.dtype))
        if routing.training:
            delta = self._train_delta(x, h, routing)
        else:
            delta = self._infer_delta(x, h, routing)
        return out + self.config.scale * delta.to(out.dtype)

    def _train_delta(self, x, h, routing: Routing) -> torch.Tensor:
        h = torch.where(routing.a_grad[..., None], h, h.detach())
        retain_B = self.retain_B.to(h.dtype)
        learn = F.linear(h, retain_B)
        frozen = F.linear(h, retain_B.detach())
        delta = torch.where(routing.retain_grad[..., None], learn, frozen)
        logits = F.linear(x.detach(), self.router.to(x.dtype)).float()
        soft_route = routing.soft_route
        soft = torch.softmax(logits, dim=-1) if soft_route is not None and soft_route.any() else None
        for head in range(self.config.forget_heads):
            on = (routing.forget_head == head + 1)
            if on.any():
                delta = delta + on[..., None].to(h.dtype) * F.linear(h, self.forget_B[head].to(h.dtype))
            if soft is not None:
                leak = soft[..., head + 1] * (soft_route & (routing.forget_head == 0))
                delta = delta + leak[..., None].to(h.dtype) * F.linear(h, self.forget_B[head].detach().to(h.dtype))
        target = routing.router_target
        if target is not None and (target != -100).any():
            routing.router_loss = routing.router_loss + F.cross_entropy(logits.flatten(0, 1), target.flatten(),
                                                                        ignore_index=-100)
        return delta

    def _infer_delta(self, x, h, routing: Routing) -> torch.Tensor:
        weights = routing.weights if routing.weights is not None else \
            route_weights(F.linear(x, self.router.to(x.dtype)).float(), routing.high, self.config)
        if self.slot.recorded is not None:
            self.slot.recorded.append(weights.detach())
        # One matmul for the retain head and every gated forget head: [h, w_1 h, ..., w_N h] @ [B_r | B_f1 | ... ]^T
        gates = torch.cat([torch.ones_like(weights[..., :1]), weights[..., 1:]], dim=-1).to(h.dtype)
        stacked = (gates[..., :, None] * h[..., None, :]).flatten(-2)
        heads = torch.cat([self.retain_B[None], self.forget_B]).permute(1, 0, 2).flatten(1)
        return F.linear(stacked, heads.to(h.dtype))


def route_weights(router_logits: torch.Tensor, high: torch.Tensor, config: AsymmetricConfig) -> torch.Tensor:
    """Gate weights over the N + 1 router outputs: softmax at the token's temperature, then top-k (k = top_k_high for
    high-entropy tokens, 1 for low-entropy tokens), renormalised. Output 0 is "no forget head"."""
    temperature = torch.where(high, config.temperature_high, config.temperature_low)[..., None]
    probs = torch.softmax(router_logits / temperature, dim=-1)
    k_high = min(config.top_k_high, probs.shape[-1])
    ranks = probs.argsort(dim=-1, descending=True).argsort(dim=-1)
    keep = torch.where(high[..., None], ranks < k_high, ranks < 1)
    kept = probs * keep
    return kept / kept.sum(-1, keepdim=True).clamp_min(1e-12)


def _features(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = getattr(module, "weight", None)
    if weight is not None and weight.dim() == 2 and type(module).__name__ == "Conv1D":  # GPT-2 stores W transposed
        return weight.shape[0], weight.shape[1]
    raise TypeError(f"cannot adapt {type(module).__name__}: only linear layers")


def default_targets(model: nn.Module) -> list[str]:
    model_type = getattr(model.config, "model_type", "")
    family = "gpt2" if model_type.startswith("gpt2") else "phi" if model_type == "phi" else "llama"
    return list(TARGET_NAMES[family])


def inject(model: nn.Module, config: AsymmetricConfig) -> RoutingSlot:
    """Replace every target linear layer by an AsymmetricLinear in place; freeze everything else."""
    model.requires_grad_(False)
    targets = config.target_modules or default_targets(model)
    config.target_modules = list(targets)
    slot = RoutingSlot()
    replaced = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and not isinstance(child, AsymmetricLinear):
                setattr(module, child_name, AsymmetricLinear(child, config, slot).to(child.weight.device))
                replaced += 1
    if not replaced:
        raise ValueError(f"no layer named {targets} in {type(model).__name__}")
    return slot


def adapter_layers(model: nn.Module) -> list[tuple[str, AsymmetricLinear]]:
    return [(name, module) for name, module in model.named_modules() if isinstance(module, AsymmetricLinear)]


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    state = {}
    for name, layer in adapter_layers(model):
        for param_name in ("lora_A", "retain_B", "forget_B", "router"):
            state[f"{name}.{param_name}"] = getattr(layer, param_name).detach().contiguous().cpu()
    return state
