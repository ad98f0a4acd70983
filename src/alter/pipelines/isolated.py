"""Run a library function in a fresh Python process: each bench step gets clean memory figures, and a crash stays
contained. The function is named by its module and name; arguments and result must pickle (plain data)."""

from __future__ import annotations

import importlib
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from alter.errors import UserError


def run_isolated(function: str, **kwargs):
    """`function` is "package.module:name"; its UserError comes back as a UserError, a crash as one line."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        try:
            return pool.submit(_call, function, kwargs).result()
        except BrokenProcessPool:
            raise UserError(f"bench step {function} died (killed, or out of memory); rerun to resume") from None


def _call(function: str, kwargs: dict):
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    module, name = function.split(":")
    return getattr(importlib.import_module(module), name)(**kwargs)
