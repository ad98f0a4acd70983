"""Unlearning objectives, one file each, and the registry. Adding a method: one file with a METHOD, one line here."""

from __future__ import annotations

from alter.errors import UserError
from alter.methods import alter, gradascent, graddiff, idkdpo, idknll, npo, rmu, simnpo, undial
from alter.methods.base import Method

METHODS: dict[str, Method] = {
    module.METHOD.name: module.METHOD
    for module in (alter, gradascent, graddiff, npo, simnpo, idknll, idkdpo, rmu, undial)
}


def get_method(name: str) -> Method:
    key = name.lower()
    if key not in METHODS:
        raise UserError(f"--method: unknown method {name!r} (available: {', '.join(METHODS)})")
    return METHODS[key]
