"""SimNPO (Fan et al., 2024): NPO without a reference model, on length-normalised likelihood with a margin.
forget = -(2/beta) * mean log sigmoid(beta * (NLL(a|q)/|a| - delta)); loss = gamma * forget + alpha * L_retain."""

from dataclasses import dataclass

import torch.nn.functional as F

from alter.methods.base import loss_method, sequence_nll, with_retain


@dataclass
class SimNPOParams:
    beta: float = 4.5
    gamma: float = 0.125
    delta: float = 0.0
    alpha: float = 1.0
    retain_loss: str = "nll"


def loss(model, batch, params, reference):
    total, count = sequence_nll(model, batch["forget"])
    per_token = total / count.clamp_min(1) - params.delta
    forget = -2.0 / params.beta * F.logsigmoid(params.beta * per_token).mean()
    return with_retain(forget, model, batch, params, reference)


METHOD = loss_method("simnpo", "reference-free NPO on length-normalised likelihood (beta 4.5, gamma 0.125, delta 0)",
                     SimNPOParams, loss)
