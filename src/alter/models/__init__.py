"""Loading and building models: aliases (`smollm2`, `tiny`), local folders and hub ids; precision."""

from alter.models.loading import load_model
from alter.models.precision import autocast, default_device, resolve_precision
from alter.models.tiny import TinyConfig, build_tiny

__all__ = ["load_model", "build_tiny", "TinyConfig", "autocast", "default_device", "resolve_precision"]
