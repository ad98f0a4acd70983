"""NPO, negative preference optimisation (Zhang et al., 2024), with a retain term as in OpenUnlearning.
forget = -(2/beta) * mean log sigmoid(-beta * (log p(a|q) - log p_ref(a|q))), sequence log-likelihoods;
loss = gamma * forget + alpha * L_retain."""

from dataclasses import dataclass

import torch.nn.functional as F

from alter.methods.base import loss_method, dpo_log_ratio, with_retain


@dataclass
class NPOParams:
    beta: float = 0.1
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"


def loss(model, batch, params, reference):
    log_ratio = dpo_log_ratio(model, batch["forget"], reference)
    forget = -2.0 / params.beta * F.logsigmoid(-params.beta * log_ratio).mean()
    return with_retain(forget, model, batch, params, reference)


METHOD = loss_method("npo", "negative preference optimisation against the frozen model (beta 0.1) + retain NLL",
                     NPOParams, loss, needs_reference=True)
