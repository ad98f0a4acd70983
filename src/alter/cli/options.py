"""Options shared by the commands that start a training run."""


def add_run_options(parser) -> None:
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow models that ship their own code")
