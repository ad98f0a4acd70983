"""Run a library function in a fresh Python process: each bench step gets clean memory figures, and a crash stays
contained. The function is named by its module and name; arguments and result must pickle (plain data). When the
caller stops (Ctrl-C, an error), the child process stops with it."""

from __future__ import annotations

import importlib
import traceback
from multiprocessing import get_context

from alter.errors import UserError


def run_isolated(function: str, **kwargs):
    """`function` is "package.module:name"; its UserError comes back as a UserError, a crash as one line."""
    context = get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_call, args=(function, kwargs, send), daemon=False)
    process.start()
    send.close()
    try:
        outcome = receive.recv()
    except EOFError:
        process.join()
        raise UserError(f"bench step {function} died (exit {process.exitcode}: killed, or out of memory); rerun to "
                        "resume") from None
    finally:
        if process.is_alive() and not receive.poll():
            process.terminate()
        process.join()
    kind, value = outcome
    if kind == "user":
        raise UserError(value)
    if kind == "error":
        raise RuntimeError(f"bench step {function} failed:\n{value}")
    return value


def _call(function: str, kwargs: dict, send) -> None:
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    module, name = function.split(":")
    try:
        result = ("ok", getattr(importlib.import_module(module), name)(**kwargs))
    except UserError as err:
        result = ("user", str(err))
    except KeyboardInterrupt:
        result = ("user", "interrupted")
    except Exception:  # the parent reports the child's traceback
        result = ("error", traceback.format_exc())
    send.send(result)
    send.close()
