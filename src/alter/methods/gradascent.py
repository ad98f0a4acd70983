"""GradAscent: maximise the NLL of the forget answers (Jang et al., 2023; TOFU baseline).
loss = -NLL(forget)."""

from dataclasses import dataclass

from alter.methods.base import loss_method, mean_nll


@dataclass
class GradAscentParams:
    pass


def loss(model, batch, params, reference):
    forget = -mean_nll(model, batch["forget"])
    return forget, {"forget_loss": forget.item()}


METHOD = loss_method("gradascent", "gradient ascent on the forget answers: -NLL(forget)", GradAscentParams, loss,
                     needs_retain=False)
