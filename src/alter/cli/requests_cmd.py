"""`alter requests ADAPTER`: the forget requests an ALTER adapter holds, and removing one of them."""

from __future__ import annotations

from pathlib import Path


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "requests", help="list an ALTER adapter's forget requests, or write it without one (--remove K --out DIR)",
        description="An ALTER adapter grows one request at a time (`alter unlearn --method alter --set "
                    "params.extend=EARLIER_ADAPTER`): each request adds its own forget heads and what switches them on "
                    "(gate rows, or under the names router its subjects' names). Without --remove this lists the "
                    "requests and their heads; with --remove K --out DIR it writes the adapter without request K: "
                    "what K made the model forget comes back, and wherever K's gate does not fire "
                    "the outputs are exactly those of the adapter before (docs/method.md, \"Sequential requests\").")
    parser.add_argument("adapter", metavar="ADAPTER", help="ALTER adapter folder")
    parser.add_argument("--remove", type=int, metavar="K", help="the request to remove")
    parser.add_argument("--out", help="folder for the adapter without request K")
    parser.set_defaults(run=run)


def run(args) -> None:
    import json

    from alter.adapters.model import CONFIG, is_alter_adapter, remove_request
    from alter.errors import UserError
    from alter.io import check_output_dir

    folder = Path(args.adapter)
    if not is_alter_adapter(folder):
        raise UserError(f"{folder}: not an ALTER adapter folder (no {CONFIG})")
    if args.remove is None:
        config = json.loads((folder / CONFIG).read_text())["config"]
        requests = config.get("head_requests") or [1] * config["forget_heads"]
        for request in sorted(set(requests)):
            print(f"request {request}: {requests.count(request)} forget heads")
        return
    if not args.out:
        raise UserError("--remove needs --out (the adapter without that request)")
    out = check_output_dir(args.out)
    if is_alter_adapter(out):
        raise UserError(f"--out: {out} already holds an adapter; choose a new folder")
    config = remove_request(folder, args.remove, out)
    print(f"wrote {out}: requests {sorted(set(config['head_requests']))} ({config['forget_heads']} forget heads)")
