"""What several commands share: one-line errors for every bad option, numeric option types, common options."""

from __future__ import annotations

import argparse
import sys

PRECISION_HELP = ("auto (default: bf16 autocast where this machine computes bf16 natively and faster and the model is "
                  "at least 512 wide, else fp32; bf16 on CUDA), fp32, bf16, or fp16 (CUDA only)")


class Parser(argparse.ArgumentParser):
    """argparse, with a user mistake reported in one line (exit status 2) instead of usage plus error."""

    def error(self, message: str):
        print(f"alter: error: {self.prog.removeprefix('alter').strip() or 'alter'}: {message}", file=sys.stderr)
        sys.exit(2)


def _number(kind, minimum, inclusive: bool, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    parse.__name__ = what
    return parse


positive_int = _number(int, 1, True, "a whole number >= 1")
non_negative_int = _number(int, 0, True, "a whole number >= 0")
positive_float = _number(float, 0.0, False, "a number > 0")


def add_run_options(parser) -> None:
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished or unfinished run in --out")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow models that ship their own code")


def add_precision(parser, extra: str = "") -> None:
    parser.add_argument("--precision", default="auto", help=PRECISION_HELP + extra)
