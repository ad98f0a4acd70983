"""`alter bench tofu`: target and retain models, every method in its own process, the TOFU suite on each, one table.

Each step runs as a separate `alter` process (clean memory figures, a crash stays contained) and is skipped when
its output is already complete, so an interrupted bench resumes where it stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from alter.errors import UserError
from alter.evaluation.tofu import load_retain_log, summarize, write_outputs
from alter.io import write_json, write_text
from alter.methods import get_method

TABLE_KEYS = ("forget_quality", "model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "retain_Q_A_Prob",
              "retain_Q_A_ROUGE", "privleak")


@dataclass
class Variant:
    name: str
    method: str
    overrides: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> "Variant":
        """`npo`, `npo+lora`, or `name=method:key=value:key=value` (e.g. alter-shannon=alter:params.entropy=shannon)."""
        name, _, spec = text.partition("=") if "=" in text.split(":")[0] else (text, "", text)
        method, *overrides = spec.split(":")
        if method.endswith("+lora"):
            method = method.removesuffix("+lora")
            overrides.append("lora.enabled=true")
        get_method(method)
        return cls(name, method, overrides)


def _alter(*args: str) -> None:
    command = [sys.executable, "-m", "alter.cli.main", *args]
    print("$ alter " + " ".join(args), flush=True)
    result = subprocess.run(command)
    if result.returncode != 0:
        raise UserError(f"bench step failed (exit {result.returncode}): alter {' '.join(args)}")


def _complete(folder: Path, name: str = "manifest.json") -> bool:
    return (folder / name).is_file()


def run_bench(model: str, data: str, forget_split: str, variants: list[Variant], out: Path, eval_args: list[str],
              finetune_args: list[str], unlearn_args: list[str]) -> dict:
    retain_split = "retain" + str(100 - int(forget_split.removeprefix("forget")))
    for name, split in (("target", "full"), ("retain", retain_split)):
        if not _complete(out / name):
            _alter("finetune", "--model", model, "--data", data, "--split", split, "--out", str(out / name),
                   "--resume", *finetune_args)
    evaluate = ["eval", "tofu", "--data", data, "--forget-split", forget_split, *eval_args]
    retain_log = out / "eval" / "retain" / "TOFU_EVAL.json"
    if not _complete(out / "eval" / "retain", "TOFU_SUMMARY.json"):
        _alter(*evaluate, "--model", str(out / "retain"), "--out", str(out / "eval" / "retain"))
    reference = ["--retain-logs", str(retain_log)]
    retain_self = out / "eval" / "retain-vs-retain"
    if not _complete(retain_self, "TOFU_SUMMARY.json"):  # the retain model against its own log: no second pass
        log = load_retain_log(retain_log)
        write_outputs(retain_self, log, *summarize(log, log))
    target_eval = out / "eval" / "target"
    if not _complete(target_eval, "TOFU_SUMMARY.json"):
        _alter(*evaluate, "--model", str(out / "target"), "--out", str(target_eval), *reference)
    rows = {"target": _row(target_eval, out / "target"), "retain": _row(retain_self, out / "retain")}
    for variant in variants:
        run_dir = out / "runs" / variant.name
        if not _complete(run_dir):
            sets = [item for override in variant.overrides for item in ("--set", override)]
            _alter("unlearn", "--model", str(out / "target"), "--data", data, "--forget-split", forget_split,
                   "--method", variant.method, "--out", str(run_dir), "--resume", *sets, *unlearn_args)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        folder = out / "eval" / variant.name
        if not _complete(folder, "TOFU_SUMMARY.json"):
            model_args = ["--model", str(out / "target"), "--adapter", str(run_dir)] \
                if manifest["output"] == "adapter" else ["--model", str(run_dir)]
            _alter(*evaluate, *model_args, "--out", str(folder), *reference)
        rows[variant.name] = _row(folder, run_dir)
    bench = {"model": model, "data": data, "forget_split": forget_split, "rows": rows}
    write_json(out / "bench.json", bench)
    write_text(out / "bench.md", markdown_table(rows))
    return bench


def _row(eval_folder: Path, run_dir: Path) -> dict:
    summary = json.loads((eval_folder / "TOFU_SUMMARY.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    row = {key: summary.get(key) for key in summary if key != "notes"}
    row.update(method=manifest.get("method", manifest.get("kind")), wall_seconds=manifest["wall_seconds"],
               peak_memory_mb=manifest["peak_memory_mb"], tokens_per_second=manifest["tokens_per_second"],
               trainable_parameters=manifest["parameters"]["trainable"])
    if "alter" in manifest:
        row["high_entropy_fraction"] = manifest["alter"]["high_entropy_fraction"]
        row["forget_heads"] = manifest["alter"]["clustering"]["heads"]
    return row


def markdown_table(rows: dict) -> str:
    header = ["run", *TABLE_KEYS, "trainable", "wall s", "peak MB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in rows.items():
        values = ["-" if row.get(k) is None else f"{row[k]:.3g}" for k in TABLE_KEYS]
        lines.append(f"| {name} | " + " | ".join(values) +
                     f" | {row['trainable_parameters']:,} | {row['wall_seconds']:.0f} | {row['peak_memory_mb']:.0f} |")
    return "\n".join(lines) + "\n"
