"""Weight-only round-to-nearest quantisation, simulated in fp32 ("fake quantisation"): each weight becomes the
value a b-bit symmetric integer grid would store, so the model computes exactly what an RTN-quantised checkpoint
dequantised to fp32 computes (real int kernels differ only in how they accumulate). Scales are per output channel,
or per group of `group` consecutive input weights within a channel (GPTQ/AWQ-style group size 128).

Used by `alter audit` (Zhang et al., ICLR 2025: unlearned knowledge that returns after 4-bit quantisation). Only
the decoder blocks' linear layers are quantised, as weight-only schemes do; embeddings, the output layer and any
adapter stay as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from alter.models.families import decoder_layers, linear_features


ADAPTER_NAME_PARTS = ("lora_", "retain_B", "forget_B", "router", "gate.")  # peft LoRA and ALTER parameters


def is_adapter_part(name: str) -> bool:
    """Whether a parameter or module name belongs to an adapter (peft LoRA, ALTER) rather than to the base."""
    return any(part in name for part in ADAPTER_NAME_PARTS)


def rtn(weight: torch.Tensor, bits: int, group: int | None = None) -> torch.Tensor:
    """`weight` [out, in] rounded to a symmetric `bits`-bit grid per output row, or per group of `group` columns."""
    out_features, in_features = weight.shape
    blocks = weight.reshape(out_features, -1, group) if group else weight[:, None, :]
    if group and in_features % group:
        raise ValueError(f"group size {group} does not divide the {in_features} input features")
    levels = 2 ** (bits - 1) - 1
    scale = blocks.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / levels
    quantised = (blocks / scale).round().clamp(-levels - 1, levels) * scale
    return quantised.reshape(out_features, in_features)


@torch.no_grad()
def fake_quantise(model: nn.Module, bits: int, group: int | None = None) -> int:
    """Quantise every linear layer of the decoder blocks in place (adapter weights excluded); return their count."""
    count = 0
    for name, module in decoder_layers(model).named_modules():
        if linear_features(module) is None or is_adapter_part(name) or type(module).__name__.startswith("Alter"):
            continue  # adapters (peft's lora_A/lora_B, ALTER's layers) keep full precision; their base is quantised
        weight = module.weight
        transposed = type(module).__name__ == "Conv1D"  # GPT-2 stores [in, out]
        matrix = weight.T if transposed else weight
        group_here = group if group and matrix.shape[1] % group == 0 else None
        quantised = rtn(matrix.float(), bits, group_here).to(weight.dtype)
        weight.copy_(quantised.T if transposed else quantised)
        count += 1
    return count
