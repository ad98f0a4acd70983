"""`alter report RUN_DIR`: a self-contained HTML report and its PNG figures."""

from __future__ import annotations

from pathlib import Path


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "report", help="write RUN_DIR/report.html (figures embedded) and RUN_DIR/report/*.png",
        description="Report on a bench or demo folder (bench.json) or one `alter unlearn` run: the results table, "
                    "forget quality against model utility, the token-entropy histogram, training curves, and each "
                    "answer token's probability before and after unlearning, coloured by entropy class and ALTER head.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="folder of `alter bench`, `alter demo` or `alter unlearn`")
    parser.set_defaults(run=run)


def run(args) -> None:
    from alter.errors import UserError
    from alter.report.html import build_report

    if not Path(args.run_dir).is_dir():
        raise UserError(f"{args.run_dir}: run folder not found")
    print(f"wrote {build_report(Path(args.run_dir))}")
