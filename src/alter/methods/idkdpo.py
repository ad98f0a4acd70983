"""IdkDPO (Maini et al., 2024; Rafailov et al., 2023): DPO preferring a refusal over the true forget answer.
forget = -(2/beta) * mean log sigmoid(beta * (r(idk) - r(answer))), r = log p(.|q) - log p_ref(.|q);
loss = gamma * forget + alpha * L_retain."""

from dataclasses import dataclass

import torch.nn.functional as F

from alter.methods.base import loss_method, dpo_log_ratio, with_retain


@dataclass
class IdkDPOParams:
    beta: float = 0.1
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"


def loss(model, batch, params, reference):
    preferred = dpo_log_ratio(model, batch["idk"], reference)
    rejected = dpo_log_ratio(model, batch["forget"], reference)
    forget = -2.0 / params.beta * F.logsigmoid(params.beta * (preferred - rejected)).mean()
    return with_retain(forget, model, batch, params, reference)


METHOD = loss_method("idkdpo", "DPO preferring refusals over forget answers (beta 0.1) + retain NLL", IdkDPOParams, loss,
                     needs_reference=True, needs_idk=True)
