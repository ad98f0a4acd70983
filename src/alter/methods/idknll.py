"""IdkNLL: teach refusals on the forget questions (TOFU's "I don't know" baseline).
loss = gamma * NLL(idk answer | forget question) + alpha * L_retain."""

from dataclasses import dataclass

from alter.methods.base import loss_method, mean_nll, with_retain


@dataclass
class IdkNLLParams:
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"


def loss(model, batch, params, reference):
    forget = mean_nll(model, batch["idk"])
    return with_retain(forget, model, batch, params, reference)


METHOD = loss_method("idknll", "fine-tune refusal answers on the forget questions + retain NLL", IdkNLLParams, loss,
                     needs_idk=True)
