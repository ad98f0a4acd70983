"""Unlearning objectives, one module each, and the registry. Adding a method: one module defining `METHOD` and one
entry in `MODULES`. Modules are imported on first use, so listing the names costs nothing (`alter --help`)."""

from __future__ import annotations

import importlib

from alter.errors import UserError

MODULES = {"alter": "alter.methods.alter", "gradascent": "alter.methods.gradascent",
           "graddiff": "alter.methods.graddiff", "npo": "alter.methods.npo", "simnpo": "alter.methods.simnpo",
           "idknll": "alter.methods.idknll", "idkdpo": "alter.methods.idkdpo", "rmu": "alter.methods.rmu",
           "undial": "alter.methods.undial"}
METHOD_NAMES = tuple(MODULES)


def get_method(name: str):
    key = name.lower()
    if key not in MODULES:
        raise UserError(f"--method: unknown method {name!r} (available: {', '.join(MODULES)})")
    return importlib.import_module(MODULES[key]).METHOD


def all_methods() -> dict:
    return {name: get_method(name) for name in MODULES}
