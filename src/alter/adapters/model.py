"""`AlterModel`: owns one model's ALTER adapter, in peft's shape (config + layer + model). It injects the layers,
holds the gate and the routing state, routes every forward through hooks, and saves and loads the adapter apart
from the base (`alter_adapter.safetensors`, `alter_config.json`).

Routing at inference is one policy for scoring and generation: the forget-head weights of position t are a
function of the tokens up to t only.
- 'content': the gate reads the hidden state entering `gate_layer` (frozen, since only later layers are adapted)
  and keeps a running max per row, restarting at each user turn when the config has a `turn_marker`;
  generation carries that max from step to step. With `adapt_below_gate` the layers before `gate_layer` are
  adapted too, and a frozen pass over them, stopped at `gate_layer`, runs before every forward to give the gate its
  state (with its own KV cache during generation).
- 'layer' and 'shared' need each token's entropy class, from the frozen model's distribution at that token, and
  'shared' its running mean of the frozen last hidden state: a frozen pass runs beside every forward, with its own
  KV cache during generation, so a decoded token is routed exactly as teacher-forced scoring routes it.
- 'names': a forget head on from the token that completes the name of one of its request's forget subjects, read
  from the token ids (`NameGate`); it adapts the same layers as 'content', and generation carries its state from
  step to step.
- 'none': every forget head is always on.
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from alter.adapters.config import AlterConfig
from alter.adapters.gates import ContentGate, NameGate, SharedRouter
from alter.adapters.layer import AlterLayer, Routing, RoutingSlot, route_weights
from alter.errors import UserError
from alter.io import atomic_path, write_json
from alter.models.families import decoder_layers, linear_features, target_names

FORMAT = "alter-asymmetric-lora/2"
WEIGHTS, CONFIG, CLUSTERS = "alter_adapter.safetensors", "alter_config.json", "clusters.json"
LAYER_PARAMETERS = ("lora_A", "retain_B", "forget_B", "router")


def default_gate_layer(model: nn.Module) -> int:
    """Half the depth: on SmolLM2 a detector there told the forget authors from others far better than at a quarter
    (docs/method.md, "The gate")."""
    return max(1, model.config.num_hidden_layers // 2)


class AlterModel:
    def __init__(self, model: nn.Module, config: AlterConfig):
        self.model, self.config = model, config
        self.slot = RoutingSlot()
        self.gate_layer = 0
        if config.router in ("content", "names"):
            self.gate_layer = config.gate_layer if config.gate_layer >= 0 else default_gate_layer(model)
            if not 1 <= self.gate_layer < model.config.num_hidden_layers:
                raise UserError(f"gate_layer: must lie in 1..{model.config.num_hidden_layers - 1}, got {self.gate_layer}")
            config.gate_layer = self.gate_layer
        self.layers = self._inject()
        hidden, device = model.config.hidden_size, next(model.parameters()).device
        self.gate = {"content": lambda: ContentGate(hidden, config.forget_heads, config.gate_parts),
                     "shared": lambda: SharedRouter(hidden, config.router_outputs)}.get(config.router, lambda: None)()
        if self.gate is not None:
            self.gate.to(device)
        self.names = self._name_gate() if config.router == "names" else None
        self._frozen_pass = False
        self._mask: torch.Tensor | None = None
        self._starts: torch.Tensor | None = None
        self._carry = None  # the gate's state at the end of the last chunk of each row (generation)
        self._companion = None  # the frozen pass's KV cache during generation ('layer', 'shared', `adapt_below_gate`)
        model.register_forward_pre_hook(self._before, with_kwargs=True)
        model.register_forward_hook(self._after, with_kwargs=True)
        self._stop_at_gate = False  # the frozen pass that feeds an `adapt_below_gate` gate ends at its layer
        if config.router == "content":
            decoder_layers(model)[self.gate_layer].register_forward_pre_hook(self._at_gate_layer, with_kwargs=True)
        model.alter = self

    # --- structure ----------------------------------------------------------------------------------------------

    def _inject(self) -> list[tuple[str, AlterLayer]]:
        self.model.requires_grad_(False)
        targets = self.config.target_modules or list(target_names(self.model))
        self.config.target_modules = list(targets)
        blocks = decoder_layers(self.model)
        prefix = next(name for name, module in self.model.named_modules() if module is blocks)
        layers = []
        for index in range(0 if self.config.adapt_below_gate else self.gate_layer, len(blocks)):
            for name, module in list(blocks[index].named_modules()):
                for child_name, child in list(module.named_children()):
                    if child_name in targets and linear_features(child) is not None:
                        layer = AlterLayer(child, self.config, self.slot)
                        setattr(module, child_name, layer)
                        layers.append((".".join(filter(None, (prefix, str(index), name, child_name))), layer))
        if not layers:
            raise UserError(f"no linear layer named {', '.join(targets)} in {type(self.model).__name__}")
        return layers

    def parameters(self, kind: str) -> list[nn.Parameter]:
        """One kind of adapter parameter across layers: lora_A, retain_B, forget_B or router."""
        return [getattr(layer, kind) for _, layer in self.layers if getattr(layer, kind) is not None]

    @property
    def needs_frozen_pass(self) -> bool:
        return self.config.router in ("layer", "shared") or self.config.adapt_below_gate

    # --- routing ------------------------------------------------------------------------------------------------

    def disabled(self):
        """The base model: the adapter is off inside this block."""
        return _Disabled(self)

    @contextlib.contextmanager
    def routed(self, routing: Routing):
        """Run the forwards inside with the given (training) routing."""
        self.slot.routing = routing
        try:
            yield routing
        finally:
            self.slot.routing = None

    @torch.no_grad()
    def frozen_output(self, input_ids, attention_mask, **extra):
        with self.disabled():
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **{"use_cache": False, **extra})

    @contextlib.contextmanager
    def recording(self):
        """Collect the forget-head weights of the forwards inside; `routes()` then tells, per token, the head most
        layers used (0 = none) and the entropy class."""
        self.slot.recorded, self._recorded_high = [], None
        try:
            yield self
        finally:
            self.slot.recorded = None

    def routes(self) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.stack(self.slot.recorded).mean(0)  # [batch, seq, N], averaged over layers
        route = torch.where(weights.sum(-1) >= 0.5, weights.argmax(-1) + 1, 0)
        return route, self._recorded_high

    def gate_state(self):
        """The routing state at the end of the last forward: the content gate's running max per row, the names
        gate's carry or the 'shared' router's running sum; with a frozen pass ('layer', 'shared',
        `adapt_below_gate`) also that pass's KV cache."""
        return (self._carry, self._companion) if self.needs_frozen_pass else self._carry

    def continue_from(self, state, rows: torch.Tensor) -> None:
        """The next forward continues rows `rows` of a forward that ended in gate state `state` (answers scored after
        a shared prompt)."""
        if self.needs_frozen_pass:
            state, companion = state
            self._companion = copy.deepcopy(companion)  # the next chunk continues the same prompts
            self._companion.batch_select_indices(rows)
        if isinstance(state, tuple):
            self._carry = tuple(part[rows] for part in state)
        else:
            self._carry = None if state is None else state[rows]

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Generation dropped finished sequences from its batch: keep the routing state of the remaining `rows`."""
        if isinstance(self._carry, tuple):
            self._carry = tuple(part[rows] for part in self._carry)
        elif self._carry is not None:
            self._carry = self._carry[rows]
        if self._companion is not None:
            self._companion.batch_select_indices(rows)

    def _before(self, module, args, kwargs):
        if self._frozen_pass or not self.slot.enabled or (self.slot.routing is not None and self.slot.routing.training):
            return None
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        length = input_ids.shape[1]
        full_mask = kwargs.get("attention_mask")
        self._mask = torch.ones_like(input_ids) if full_mask is None else full_mask[:, -length:]
        self._starts = ContentGate.turn_starts(input_ids, self.config.turn_marker) if self.config.turn_marker else None
        cache = kwargs.get("cache")
        if cache is None or cache.get_seq_length() == 0:  # a new sequence
            self._carry = None
            self._companion = None
            if cache is not None and self.needs_frozen_pass:
                from transformers import DynamicCache

                self._companion = DynamicCache(config=self.model.config)
        high = torch.zeros_like(input_ids, dtype=torch.bool)
        weights = None
        extra = {"position_ids": kwargs["position_ids"]} if kwargs.get("position_ids") is not None else {}
        if self._companion is not None:
            extra.update(cache=self._companion, use_cache=True)
        if self.config.adapt_below_gate:
            weights = self._gate_weights(self._frozen_gate_input(input_ids, full_mask, extra))
        elif self.needs_frozen_pass:
            output = self.frozen_output(input_ids, full_mask, output_hidden_states=self.config.router == "shared",
                                        **extra)
            high = self.config.entropy.is_high(output.logits)
            if self.config.router == "shared":
                means, self._carry = SharedRouter.running_mean(output.hidden_states[-1], self._mask, self._carry)
                weights = route_weights(self.gate(means), high, self.config)
        elif self.config.router == "names":
            on, self._carry = self.names.on(input_ids, self._mask, self._carry)
            weights = on.float()
        elif self.config.router == "none":
            weights = torch.ones(*input_ids.shape, self.config.forget_heads, device=input_ids.device)
        self.slot.routing = Routing(high=high, weights=weights)
        if self.slot.recorded is not None:
            self.slot.recorded.clear()
            self._recorded_high = high
        return None

    def _at_gate_layer(self, module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if self._stop_at_gate:
            raise _GateInput(hidden)
        routing = self.slot.routing
        if routing is None or routing.training or not self.slot.enabled or self.config.adapt_below_gate:
            return None
        routing.weights = self._gate_weights(hidden)
        return None

    def _gate_weights(self, hidden: torch.Tensor) -> torch.Tensor:
        """The content gate's forget-head weights from the frozen state entering `gate_layer`; advances its running
        max."""
        pooled = self.gate.pooled_scores(hidden, self._mask, self._carry, self._starts)
        self._carry = pooled[:, -1]
        return ContentGate.weights(self.gate.combined(pooled), self.config.head_mix)

    def _frozen_gate_input(self, input_ids, attention_mask, extra: dict) -> torch.Tensor:
        """The frozen model's state entering `gate_layer`: a frozen pass over the layers before it only."""
        self._stop_at_gate = True
        try:
            self.frozen_output(input_ids, attention_mask, **extra)
        except _GateInput as reached:
            return reached.hidden
        finally:
            self._stop_at_gate = False
        raise RuntimeError(f"the frozen pass never reached gate layer {self.gate_layer}")

    def _after(self, module, args, kwargs, output):
        if self.slot.routing is not None and not self.slot.routing.training:
            self.slot.routing = None
        return None

    # --- sequential requests ------------------------------------------------------------------------------------

    def add_request(self, count: int, gate_rows: ContentGate | None = None,
                    name_patterns: list[list[int]] | None = None, name_partial: list[int] | None = None) -> int:
        """Append `count` forget heads for a new request, zero-initialised, so the model is unchanged until they
        train; with the content gate, `gate_rows` (fitted on the request's sub-domains, one output per head), with
        the names gate, the request's `name_patterns` (and `name_partial`). Returns the new request's number."""
        _check_sequential(self.config)
        request = max(self.config.requests) + 1
        for _, layer in self.layers:
            fresh = layer.forget_B.new_zeros(count, *layer.forget_B.shape[1:])
            layer.forget_B = nn.Parameter(torch.cat([layer.forget_B.detach(), fresh]))
        self.config.head_requests = self.config.requests + [request] * count
        self.config.forget_heads += count
        if self.config.router == "names":
            self.config.name_requests = self.config.pattern_requests + [request] * len(name_patterns)
            if self.config.name_partial or name_partial:
                self.config.name_partial = self.config.pattern_partial + (name_partial or [0] * len(name_patterns))
            self.config.name_patterns = self.config.name_patterns + [list(p) for p in name_patterns]
            self.names = self._name_gate()
        else:
            weight, bias = gate_rows.detector.weight, gate_rows.detector.bias
            self._set_gate_rows(torch.cat([self.gate.detector.weight, weight.to(self.gate.detector.weight)]),
                                torch.cat([self.gate.detector.bias, bias.to(self.gate.detector.bias)]))
        return request

    def _name_gate(self) -> NameGate:
        return NameGate(self.config.name_patterns, self.config.pattern_requests, self.config.requests,
                        self.config.pattern_partial)

    def _set_gate_rows(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        detector = nn.Linear(weight.shape[1], weight.shape[0]).to(weight.device, weight.dtype)
        with torch.no_grad():
            detector.weight.copy_(weight)
            detector.bias.copy_(bias)
        self.gate.detector = detector.requires_grad_(False)

    # --- save and load ------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"{name}.{kind}": getattr(layer, kind).detach().contiguous().cpu()
                 for name, layer in self.layers for kind in LAYER_PARAMETERS if getattr(layer, kind) is not None}
        if self.gate is not None:
            state.update({f"gate.{k}": v.detach().contiguous().cpu() for k, v in self.gate.state_dict().items()})
        return state

    def save(self, folder: Path, base_model: str, facts: dict | None = None, clusters: dict | None = None) -> None:
        with atomic_path(folder / WEIGHTS) as tmp:
            save_file(self.state_dict(), str(tmp))
        write_json(folder / CONFIG, {"format": FORMAT, "base_model": base_model, "config": self.config.to_dict(),
                                     **(facts or {})})
        if clusters is not None:
            write_json(folder / CLUSTERS, clusters)

    @classmethod
    def load(cls, model: nn.Module, folder: Path) -> "AlterModel":
        meta = json.loads((folder / CONFIG).read_text())
        if meta.get("format") != FORMAT:
            raise UserError(f"{folder / CONFIG}: adapter format {meta.get('format')!r}; this alter reads {FORMAT} "
                            "(retrain the adapter)")
        if not (folder / WEIGHTS).is_file():
            raise UserError(f"{folder}: adapter has no {WEIGHTS}; alter loads safetensors only")
        try:
            config = AlterConfig.from_dict(meta["config"])
        except (ValueError, TypeError) as err:
            raise UserError(f"{folder / CONFIG}: {err}") from None
        adapter = cls(model, config)
        state = load_file(str(folder / WEIGHTS))
        expected = adapter.state_dict()
        if set(state) != set(expected):
            raise UserError(f"{folder}: adapter does not fit this model (different architecture or layers)")
        targets = {f"{name}.{kind}": getattr(layer, kind) for name, layer in adapter.layers for kind in LAYER_PARAMETERS
                   if getattr(layer, kind) is not None}
        targets.update({f"gate.{k}": v for k, v in (adapter.gate.state_dict(keep_vars=True).items()
                                                     if adapter.gate is not None else [])})
        with torch.no_grad():
            for key, value in state.items():
                if targets[key].shape != value.shape:
                    raise UserError(f"{folder}: adapter does not fit this model ({key}: {tuple(value.shape)} vs "
                                    f"{tuple(targets[key].shape)})")
                targets[key].copy_(value)
        return adapter


def _check_sequential(config: AlterConfig) -> None:
    if config.router not in ("content", "names"):
        raise UserError(f"sequential requests need router 'content' or 'names' (each head has its own gate row or "
                        f"names); this adapter uses {config.router!r}")
    if config.gate_parts != 1:
        raise UserError(f"sequential requests need one detector per head (gate_parts 1); this adapter has "
                        f"{config.gate_parts}")


def remove_request(folder: Path, request: int, out: Path) -> dict:
    """Write to `out` the adapter in `folder` without one request's forget heads and gate rows (or names). What
    that request made the model forget comes back; wherever its gate did not fire, outputs are exactly what they
    were. Works on the saved tensors alone (no model is loaded); returns the new adapter's config."""
    meta = json.loads((folder / CONFIG).read_text())
    config = AlterConfig.from_dict(meta["config"])
    _check_sequential(config)
    requests = config.requests
    if request not in requests:
        raise UserError(f"--request: {folder} holds requests {sorted(set(requests))}, not {request}")
    if set(requests) == {request}:
        raise UserError(f"--request: {request} is the only request of {folder}; use the base model instead")
    keep = torch.tensor([r != request for r in requests])
    state = {key: value[keep] if key.endswith(".forget_B") or key.startswith("gate.detector.") else value
             for key, value in load_file(str(folder / WEIGHTS)).items()}
    config.head_requests = [r for r in requests if r != request]
    config.forget_heads = len(config.head_requests)
    if config.router == "names":
        kept = [(p, r, k) for p, r, k in zip(config.name_patterns, config.pattern_requests, config.pattern_partial)
                if r != request]
        config.name_patterns, config.name_requests = [p for p, _, _ in kept], [r for _, r, _ in kept]
        config.name_partial = [k for _, _, k in kept] if config.name_partial else []
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    write_json(out / CONFIG, {**meta, "config": config.to_dict(),
                              "removed_requests": [*meta.get("removed_requests", []), request]})
    return config.to_dict()


class _GateInput(Exception):
    """Ends a frozen pass at the gate's layer, carrying the state the gate reads."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden


class _Disabled:
    def __init__(self, adapter: AlterModel):
        self.adapter = adapter

    def __enter__(self):
        self.adapter._frozen_pass, self.saved = True, self.adapter.slot.enabled
        self.adapter.slot.enabled = False

    def __exit__(self, *exc):
        self.adapter._frozen_pass = False
        self.adapter.slot.enabled = self.saved


def is_alter_adapter(folder: Path) -> bool:
    return (folder / CONFIG).is_file()
