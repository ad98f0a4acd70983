"""What a run costs and what it ran on: peak memory, parameter counts, library versions; recorded in every manifest
and evaluation log."""

from __future__ import annotations

import ctypes
import functools
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


@functools.cache
def _glibc_trim():
    """glibc's `malloc_trim`, or None elsewhere (macOS, musl, Windows); looked up on first use, not at import."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Give the pages of freed CPU tensors back to the system. A training step's tensors change shape from batch to
    batch; glibc keeps the pages they leave behind in its heap, and the resident size of a SmolLM2 ALTER run grew by
    0.6 GB over Phase II without it (docs/results.md, "ALTER's unlearning cost")."""
    trim = _glibc_trim()
    if trim is not None:
        trim(0)


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
