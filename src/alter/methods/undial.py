"""UNDIAL, unlearning via self-distillation with adjusted logits (Dong et al., 2024). The student matches the
frozen model's distribution with the true token's logit lowered by beta, on forget answer tokens only:
forget = CE(p_student, softmax(z_ref - beta * onehot(y))); loss = gamma * forget + alpha * L_retain."""

from dataclasses import dataclass

import torch.nn.functional as F

from alter.methods.base import loss_method, answer_logits, with_retain


@dataclass
class UNDIALParams:
    beta: float = 10.0
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"


def loss(model, batch, params, reference):
    forget = batch["forget"]
    logits, targets, mask = answer_logits(model, forget)
    teacher, _, _ = answer_logits(model, forget, reference)
    adjusted = teacher - params.beta * F.one_hot(targets, teacher.shape[-1]).to(teacher.dtype)
    soft_targets = F.softmax(adjusted, dim=-1)
    token_ce = -(soft_targets * F.log_softmax(logits, dim=-1)).sum(-1)
    forget_loss = (token_ce * mask).sum() / mask.sum().clamp_min(1)
    return with_retain(forget_loss, model, batch, params, reference)


METHOD = loss_method("undial", "self-distillation towards the frozen model with the true token's logit lowered (beta 10)",
                     UNDIALParams, loss, needs_reference=True)
