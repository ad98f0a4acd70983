"""`alter` command line: one subcommand per job; user mistakes end in one line on stderr and exit status 2.

Command modules import nothing heavy at module level (their `run` does), so `alter --help` answers at once; a
test checks that importing this module loads no torch.
"""

from __future__ import annotations

import os
import sys

from alter import __version__
from alter.cli import (audit_cmd, bench_cmd, demo_cmd, entropy_cmd, eval_cmd, export_cmd, finetune_cmd, generate_cmd,
                       harness_cmd, report_cmd, requests_cmd, unlearn_cmd, world_cmd)
from alter.cli.options import Parser
from alter.errors import UserError
from alter.io import DISK_FULL

COMMANDS = [demo_cmd, world_cmd, finetune_cmd, unlearn_cmd, eval_cmd, bench_cmd, audit_cmd, export_cmd, requests_cmd,
            harness_cmd, report_cmd, entropy_cmd, generate_cmd]


def build_parser() -> Parser:
    parser = Parser(prog="alter", description="Machine unlearning for LLMs: ALTER, the field's baselines, and "
                                              "TOFU evaluation with out-of-sample probes.")
    parser.add_argument("--version", action="version", version=f"alter {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for module in COMMANDS:
        module.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except UserError as err:
        print(f"alter: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        print(f"alter: error: {err.filename or 'output'}: no space left ({err.strerror}); finished files are intact, "
              "rerun with --resume after freeing space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nalter: interrupted; checkpoints are kept: rerun the same command with --resume to continue",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
