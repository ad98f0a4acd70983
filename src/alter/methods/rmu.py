"""RMU, representation misdirection (Li et al., 2024, WMDP). At one middle layer, push forget-answer activations
towards a fixed random direction scaled by `steering_coeff`, and keep retain activations at the frozen model's:
loss = mean ||h(forget) - c u||^2 + alpha * mean ||h(retain) - h_ref(retain)||^2 (per hidden unit).
Literature defaults (Zephyr-7B): c = 6.5, alpha = 1200; c should grow with the model's activation norm.

`update`: 'all' trains every weight; 'canonical' trains only the MLP output projections of the steered layer and
the two before it, as WMDP's reference implementation does (layer 7 of Zephyr's 32, learning rate 5e-5:
`configs/unlearn/rmu-canonical.yaml`)."""

from dataclasses import dataclass

import torch

from alter.data.formatting import IGNORE_INDEX
from alter.methods.base import loss_method, forward
from alter.models.families import mlp_output

_DIRECTIONS: dict[tuple, torch.Tensor] = {}


@dataclass
class RMUParams:
    layer: int = -1  # decoder layer whose output is steered; -1 = the middle layer
    steering_coeff: float = 6.5
    alpha: float = 1200.0
    seed: int = 0
    update: str = "all"  # 'all' weights, or 'canonical': MLP output projections of layers layer-2..layer

    def __post_init__(self):
        if self.update not in ("all", "canonical"):
            raise ValueError(f"params.update: expected 'all' or 'canonical', got {self.update!r}")


def _layer_index(model, layer: int) -> int:
    config = getattr(model, "module", model).config
    return config.num_hidden_layers // 2 if layer < 0 else layer


def random_direction(hidden: int, seed: int, device) -> torch.Tensor:
    key = (hidden, seed, str(device))
    if key not in _DIRECTIONS:
        generator = torch.Generator().manual_seed(seed)
        u = torch.rand(hidden, generator=generator)
        _DIRECTIONS[key] = (u / u.norm()).to(device)
    return _DIRECTIONS[key]


def canonical_overrides() -> list[str]:
    """The recipe overrides of WMDP's reference setting (`rmu-canonical` in benches,
    configs/unlearn/rmu-canonical.yaml)."""
    return ["params.update=canonical", "params.layer=7", "train.learning_rate=5e-5"]


def canonical_weights(model, params: RMUParams) -> list | None:
    """'canonical': the MLP output projections of the steered layer and the two before it; 'all': None."""
    if params.update == "all":
        return None
    layer = _layer_index(model, params.layer)
    return [p for index in range(max(0, layer - 2), layer + 1) for p in mlp_output(model, index).parameters()]


def _hidden(output, index: int) -> torch.Tensor:
    return output.hidden_states[index + 1].float()


def loss(model, batch, params, reference):
    index = _layer_index(model, params.layer)
    forget = batch["forget"]
    forget_h = _hidden(forward(model, forget, output_hidden_states=True), index)
    answer = forget["labels"] != IGNORE_INDEX
    target = params.steering_coeff * random_direction(forget_h.shape[-1], params.seed, forget_h.device)
    forget_loss = ((forget_h - target) ** 2).mean(-1)[answer].mean()
    retain = batch["retain"]
    retain_h = _hidden(forward(model, retain, output_hidden_states=True), index)
    reference_h = _hidden(reference.forward(model, retain, output_hidden_states=True), index)
    valid = retain["attention_mask"].bool()
    retain_loss = ((retain_h - reference_h) ** 2).mean(-1)[valid].mean()
    total = forget_loss + params.alpha * retain_loss
    return total, {"forget_loss": forget_loss.item(), "retain_loss": retain_loss.item()}


METHOD = loss_method("rmu", "steer a middle layer's forget activations to a scaled random direction, keep retain ones",
                     RMUParams, loss, needs_reference=True, trainable=canonical_weights)
