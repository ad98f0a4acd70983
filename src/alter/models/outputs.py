"""What a model's forward accepts, so callers can ask for less output than a full forward gives."""

from __future__ import annotations

import inspect


def forward_accepts(model, argument: str) -> bool:
    base = getattr(model, "module", model)  # DDP wraps the model in `.module`
    base = base.get_base_model() if hasattr(base, "get_base_model") else base  # peft wraps it in turn
    return argument in inspect.signature(base.forward).parameters


def accepts_logits_to_keep(model) -> bool:
    """transformers' causal LMs can run the (vocabulary-sized) output layer on chosen positions only."""
    return forward_accepts(model, "logits_to_keep")


def last_logit_only(model) -> dict:
    return {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}



def logits_at(call, model, keep):
    """`call(**extra).logits` at positions `keep` only, where `call` runs a forward of `model`; the output layer skips
    the other positions when the model allows it."""
    logits = call(**({"logits_to_keep": keep} if accepts_logits_to_keep(model) else {})).logits
    return logits if logits.shape[1] == len(keep) else logits[:, keep]
