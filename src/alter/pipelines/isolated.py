"""Run a library function in a fresh Python process: each bench step gets clean memory figures, and a crash stays
contained. The function is named by its module and name; arguments and result must pickle (plain data). When the
caller stops (Ctrl-C, an error), the child process stops with it; when the caller is killed, the child notices
within seconds and exits (on POSIX), so no step keeps computing for a bench that is gone.

Where the platform has it, children are forked from a `forkserver` that imported torch, transformers and the steps'
modules once: a spawned child spends about 4 s importing them again, which is a tenth of a tiny-model demo. The
server itself never computes, so its children start with no thread pools or other state to inherit (a plain fork of
the caller would copy whatever it had run). Children see the environment the server started with."""

from __future__ import annotations

import importlib
import os
import threading
import time
import traceback
from multiprocessing import get_all_start_methods, get_context

from alter.errors import UserError

PRELOADED = ["torch", "transformers", "alter.training.finetune", "alter.training.unlearn",
             "alter.evaluation.suites.base", "alter.adapters.loading"]
_context = None


def _start_context():
    """The forkserver context (made once per process, with its preloads), or spawn where there is no forkserver."""
    global _context
    if _context is None:
        if "forkserver" in get_all_start_methods():
            _context = get_context("forkserver")
            _context.set_forkserver_preload(PRELOADED)
        else:
            _context = get_context("spawn")
    return _context


def run_isolated(function: str, **kwargs):
    """`function` is "package.module:name"; its UserError comes back as a UserError, a crash as one line."""
    context = _start_context()
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_call, args=(function, kwargs, send, os.getpid()), daemon=False)
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


def _exit_with(caller: int, every: float = 2.0) -> None:
    """Exit as soon as the process that started this step is gone (killed by a signal, which runs no cleanup)."""
    def watch():
        while True:
            time.sleep(every)
            try:
                os.kill(caller, 0)  # signal 0 only checks that the process exists (POSIX)
            except ProcessLookupError:
                os._exit(1)

    if os.name == "posix":
        threading.Thread(target=watch, daemon=True).start()


def _call(function: str, kwargs: dict, send, caller: int | None = None) -> None:
    if caller is not None:
        _exit_with(caller)
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
