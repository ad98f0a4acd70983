"""Device and numeric precision: weights stay fp32, compute runs under autocast.

bf16 autocast on CPU trains about 2x and infers 2-3x faster than fp32 with the same loss; on CUDA bf16 is used
where the GPU supports it, fp16 otherwise. Every result records the precision it was computed in.
"""

from __future__ import annotations

import contextlib

import torch

from alter.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    if precision not in PRECISIONS:
        raise UserError(f"--precision: unknown value {precision!r} (choose from {', '.join(PRECISIONS)})")
    device = torch.device(device)
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise UserError("--precision fp16 is not supported on CPU; use bf16 or fp32")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16"


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    device = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
