"""GradDiff: gradient ascent on forget plus descent on retain (Liu et al., 2022; TOFU baseline).
loss = gamma * (-NLL(forget)) + alpha * L_retain, L_retain = NLL(retain) or KL(p_ref || p) on retain."""

from dataclasses import dataclass

from alter.methods.base import loss_method, mean_nll, with_retain


@dataclass
class GradDiffParams:
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"


def loss(model, batch, params, reference):
    forget = -mean_nll(model, batch["forget"])
    return with_retain(forget, model, batch, params, reference)


METHOD = loss_method("graddiff", "ascent on forget, descent on retain (retain loss NLL or KL)", GradDiffParams, loss,
                     needs_reference=False)
