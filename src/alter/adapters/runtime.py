"""Using an ALTER adapter: attach it to a base model, route by entropy at inference, save and load it.

At inference each forward needs every token's entropy class. For a forward over several tokens (scoring, the
prompt of a generation) the classes come from one frozen pass (adapter off); during generation each new token
takes the class of the previous step's distribution, so decoding adds no extra pass (docs/method.md).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from alter.adapters.asymmetric import (AsymmetricConfig, Routing, RoutingSlot, adapter_layers, adapter_state, inject,
                                      route_weights)
from alter.entropy import token_entropy
from alter.errors import UserError
from alter.io import write_json

FORMAT = "alter-asymmetric-lora/1"
WEIGHTS, CONFIG, CLUSTERS = "alter_adapter.safetensors", "alter_config.json", "clusters.json"
SHARED = "shared_router"


@dataclass
class EntropySettings:
    kind: str = "tsallis"
    q: float = 1.2
    threshold: float = 1.2
    guidance: bool = True  # off: every token is treated as low-entropy (plain asymmetric LoRA)

    def is_high(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.guidance:
            return torch.zeros(logits.shape[:-1], dtype=torch.bool, device=logits.device)
        return token_entropy(logits, self.kind, self.q) > self.threshold


class AlterRuntime:
    """Owns the routing slot of one adapted model and the hooks that route at inference."""

    def __init__(self, model: nn.Module, slot: RoutingSlot, config: AsymmetricConfig, entropy: EntropySettings):
        self.model, self.slot, self.config, self.entropy = model, slot, config, entropy
        self._frozen_pass = False
        self._last_high: torch.Tensor | None = None
        self._last_gate: torch.Tensor | None = None
        self.shared_router: nn.Linear | None = None  # config.router == "shared": last hidden state -> N + 1 outputs
        model.register_forward_pre_hook(self._before, with_kwargs=True)
        model.register_forward_hook(self._after, with_kwargs=True)
        model.alter_runtime = self

    def frozen(self):
        return _Disabled(self)

    @torch.no_grad()
    def frozen_output(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, hidden: bool = False, **extra):
        """The base model's output with the adapter off."""
        with self.frozen():
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                              output_hidden_states=hidden, **extra)

    @contextlib.contextmanager
    def recording(self):
        """Collect the routes of the forwards inside: `routes()` then gives, per token, the router output chosen by
        most layers (0 = no forget head) and the entropy class used."""
        self.slot.recorded, self._recorded_high = [], None
        try:
            yield self
        finally:
            self.slot.recorded = None

    def routes(self) -> tuple[torch.Tensor, torch.Tensor]:
        votes = torch.stack(self.slot.recorded).mean(0)  # [batch, seq, N + 1], averaged over layers
        return votes.argmax(-1), self._recorded_high

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Generation dropped finished sequences from its batch: keep the decoding state of the remaining `rows`."""
        if self._last_high is not None:
            self._last_high = self._last_high[rows]
        if self._last_gate is not None:
            self._last_gate = self._last_gate[rows]

    def _before(self, module, args, kwargs):
        if self._frozen_pass or not self.slot.enabled:
            return None
        if self.slot.routing is not None and self.slot.routing.training:
            return None
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        cached = kwargs.get("cache", kwargs.get("past_key_values")) is not None  # the name differs across versions
        last = self._last_high
        gate = None
        if input_ids.shape[1] == 1 and cached and last is not None and last.shape[0] == input_ids.shape[0]:
            high = last[:, None]
            if self.shared_router is not None:
                gate = self._last_gate[:, None]
        else:
            output = self.frozen_output(input_ids, kwargs.get("attention_mask"), hidden=self.shared_router is not None)
            high = self.entropy.is_high(output.logits)
            if self.shared_router is not None:
                means = running_mean(output.hidden_states[-1], kwargs.get("attention_mask"))
                gate = self.shared_router.to(means.device)(means)
                self._last_gate = gate[:, -1]
        weights = None if gate is None else route_weights(gate, high, self.config)
        self.slot.routing = Routing(high=high, weights=weights)
        if self.slot.recorded is not None:
            self.slot.recorded.clear()
            self._recorded_high = high
        return None

    def _after(self, module, args, kwargs, output):
        if self._frozen_pass or not self.slot.enabled:
            return None
        if self.slot.routing is not None and not self.slot.routing.training:
            self._last_high = self.entropy.is_high(output.logits[:, -1].detach())
            self.slot.routing = None
        return None

    def save(self, folder: Path, base_model: str, clusters: dict | None = None) -> None:
        state = adapter_state(self.model)
        if self.shared_router is not None:
            state.update({f"{SHARED}.{k}": v.detach().contiguous().cpu() for k, v in self.shared_router.state_dict().items()})
        save_file(state, str(folder / WEIGHTS))
        write_json(folder / CONFIG, {"format": FORMAT, "base_model": base_model, "adapter": self.config.to_dict(),
                                     "entropy": vars(self.entropy)})
        if clusters is not None:
            write_json(folder / CLUSTERS, clusters)


class _Disabled:
    def __init__(self, runtime: AlterRuntime):
        self.runtime = runtime

    def __enter__(self):
        self.runtime._frozen_pass, self.saved = True, self.runtime.slot.enabled
        self.runtime.slot.enabled = False

    def __exit__(self, *exc):
        self.runtime._frozen_pass = False
        self.runtime.slot.enabled = self.saved


def running_mean(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of the hidden states over the real tokens at positions <= t (what the shared router reads)."""
    hidden = hidden.float()
    mask = torch.ones(hidden.shape[:2], device=hidden.device) if attention_mask is None else attention_mask.float()
    return (hidden * mask[..., None]).cumsum(1) / mask.cumsum(1).clamp_min(1)[..., None]


def shared_router_from(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    router = nn.Linear(weight.shape[1], weight.shape[0]).to(weight.device)
    with torch.no_grad():
        router.weight.copy_(weight)
        router.bias.copy_(bias)
    return router.requires_grad_(False)


def attach(model: nn.Module, config: AsymmetricConfig, entropy: EntropySettings) -> AlterRuntime:
    return AlterRuntime(model, inject(model, config), config, entropy)


def is_alter_adapter(folder: Path) -> bool:
    return (folder / CONFIG).is_file()


def load_alter_adapter(model: nn.Module, folder: Path) -> AlterRuntime:
    meta = json.loads((folder / CONFIG).read_text())
    if meta.get("format") != FORMAT:
        raise UserError(f"{folder / CONFIG}: unknown adapter format {meta.get('format')!r}")
    if not (folder / WEIGHTS).is_file():
        raise UserError(f"{folder}: adapter has no {WEIGHTS}; alter loads safetensors only")
    runtime = attach(model, AsymmetricConfig(**meta["adapter"]), EntropySettings(**meta["entropy"]))
    state = load_file(str(folder / WEIGHTS))
    shared = {k.removeprefix(SHARED + "."): state.pop(k) for k in list(state) if k.startswith(SHARED + ".")}
    if runtime.config.router == "shared":
        if set(shared) != {"weight", "bias"}:
            raise UserError(f"{folder}: adapter config says router 'shared' but {WEIGHTS} has no shared router")
        runtime.shared_router = shared_router_from(shared["weight"], shared["bias"])
    layers = dict(adapter_layers(model))
    expected = {f"{name}.{p}" for name in layers for p in ("lora_A", "retain_B", "forget_B", "router")}
    if set(state) != expected:
        raise UserError(f"{folder}: adapter does not fit this model (different architecture or layers)")
    with torch.no_grad():
        for key, value in state.items():
            name, param = key.rsplit(".", 1)
            target = getattr(layers[name], param)
            if target.shape != value.shape:
                raise UserError(f"{folder}: adapter does not fit this model ({key}: {tuple(value.shape)} vs "
                                f"{tuple(target.shape)})")
            target.copy_(value)
    return runtime
