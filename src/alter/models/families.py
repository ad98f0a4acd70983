"""Model families: which linear layers an adapter targets, and where the decoder layers are.

Tested on tiny random configurations of each family (`tests/test_families.py`). A causal LM of another family
works when its projections carry the Llama names; otherwise adapters refuse it with one line naming the family.
"""

from __future__ import annotations

from torch import nn

from alter.errors import UserError

# Attention and MLP projections, by `config.model_type`.
LLAMA_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TARGET_NAMES = {
    "llama": LLAMA_NAMES, "qwen2": LLAMA_NAMES, "mistral": LLAMA_NAMES, "gemma": LLAMA_NAMES,
    "gemma2": LLAMA_NAMES, "qwen3": LLAMA_NAMES,
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),  # transformers' Conv1D, weight stored transposed
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
}
# The MLP's output projection inside a decoder block (RMU's canonical update), by `config.model_type`.
MLP_OUTPUT = {"phi": "mlp.fc2", "gpt2": "mlp.c_proj", "gpt_neox": "mlp.dense_4h_to_h"}
TESTED_FAMILIES = ("llama", "qwen2", "mistral", "gemma", "phi3", "gpt2", "gpt_neox")


def family(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "model_type", "unknown"))


def target_names(model: nn.Module) -> tuple[str, ...]:
    """The projection names to adapt; refused (one line) when the model has none of them."""
    names = TARGET_NAMES.get(family(model), LLAMA_NAMES)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if not present & set(names):
        raise UserError(f"model family {family(model)!r} is not supported by alter's adapters: none of its layers is "
                        f"named {', '.join(names)} (supported: {', '.join(TESTED_FAMILIES)})")
    return names


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of decoder blocks (model.layers, transformer.h, gpt_neox.layers...)."""
    count = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise UserError(f"model family {family(model)!r}: cannot find its {count} decoder layers")


def mlp_output(model: nn.Module, layer: int) -> nn.Module:
    """The MLP output projection of decoder block `layer` (down_proj in the Llama families)."""
    path = MLP_OUTPUT.get(family(model), "mlp.down_proj")
    try:
        return decoder_layers(model)[layer].get_submodule(path)
    except AttributeError:
        raise UserError(f"model family {family(model)!r}: decoder layer {layer} has no {path}") from None


def linear_features(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) features of a linear layer (nn.Linear or GPT-2's Conv1D), None for anything else."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and weight is not None and weight.dim() == 2:
        return weight.shape[0], weight.shape[1]
    return None
