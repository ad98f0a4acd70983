"""IdkNLL: teach refusals on the forget questions (TOFU's "I don't know" baseline).
loss = gamma * NLL(idk answer | forget question) + alpha * L_retain."""

from dataclasses import dataclass

from alter.methods.base import Method, combine, mean_nll, retain_loss


@dataclass
class IdkNLLParams:
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"


def loss(model, batch, params, reference):
    forget = mean_nll(model, batch["idk"])
    return combine(forget, retain_loss(model, batch, params.retain_loss, reference), params.gamma, params.alpha)


METHOD = Method("idknll", "fine-tune refusal answers on the forget questions + retain NLL", IdkNLLParams, loss,
                needs_idk=True)
