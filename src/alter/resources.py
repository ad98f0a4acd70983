"""What a run costs and what it ran on: peak memory, parameter counts, library versions; recorded in every manifest
and evaluation log."""

from __future__ import annotations

import platform
import resource
import sys
from importlib import metadata

import torch


def peak_memory_mb() -> float:
    """Peak resident memory of this process (CPU), or peak allocated CUDA memory when on a GPU."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kilobytes / 1024 if sys.platform != "darwin" else kilobytes / 2**20


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("alter", "torch", "transformers", "peft", "accelerate", "tokenizers", "scipy", "rouge-score"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
