"""Options shared by several commands."""

PRECISION_HELP = ("auto (default: bf16 autocast where this machine computes bf16 natively and faster, else fp32; "
                  "bf16 on CUDA), fp32, bf16, or fp16 (CUDA only)")


def add_run_options(parser) -> None:
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow models that ship their own code")
