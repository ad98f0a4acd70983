"""`alter bench tofu`: target and retain models, every method in its own process, the TOFU suite on each, one table.

Each step runs as a separate `alter` process (clean memory figures, a crash stays contained). Every step folder
carries `bench_key.txt`, a hash of everything its output depends on (model, data fingerprint, recipe, arguments,
the steps it reads). A step whose folder is finished under the same key is reused; an unfinished one resumes from
its checkpoints; one made under another key is recomputed. The target and retain models and their evaluations
live in a cache shared by every bench (`--cache`), so a second bench on the same model and data skips them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alter import __version__
from alter.errors import UserError
from alter.evaluation.tofu import SUITE_VERSION, load_retain_log, summarize, write_outputs
from alter.io import write_json, write_text
from alter.methods import get_method
from alter.training.recipe import build_recipe

TABLE_KEYS = ("forget_quality", "model_utility", "forget_nll", "retain_nll", "forget_Q_A_Prob", "forget_Q_A_ROUGE",
              "retain_Q_A_Prob", "retain_Q_A_ROUGE", "privleak")
KEY_FILE = "bench_key.txt"
BUILT_IN_MODELS = ("tiny", "smollm2")
EVAL_FILES = ("TOFU_EVAL.json", "TOFU_SUMMARY.json")


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


@dataclass
class BenchPlan:
    model: str
    data: str
    forget_split: str
    variants: list[Variant]
    out: Path
    cache: Path
    precision: str  # resolved (never "auto"), so it keys every cached step
    eval_args: list[str] = field(default_factory=list)
    finetune_args: list[str] = field(default_factory=list)
    unlearn_args: list[str] = field(default_factory=list)

    @property
    def retain_split(self) -> str:
        return "retain" + str(100 - int(self.forget_split.removeprefix("forget")))


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def folder_fingerprint(path: str) -> str:
    """Contents of a local folder (names and bytes of its files), or the name itself for a built-in or hub model."""
    folder = Path(path)
    if path in BUILT_IN_MODELS or not folder.is_dir():
        return f"{path}@alter-{__version__}"
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and ".publish-" not in str(p)):
        digest.update(str(file.relative_to(folder)).encode())
        digest.update(file.read_bytes() if file.stat().st_size < 50_000_000 else str(file.stat().st_size).encode())
    return digest.hexdigest()[:16]


def _alter(*args: str) -> None:
    command = [sys.executable, "-m", "alter.cli.main", *args]
    print("$ alter " + " ".join(args), flush=True)
    result = subprocess.run(command)
    if result.returncode != 0:
        raise UserError(f"bench step failed (exit {result.returncode}): alter {' '.join(args)}")


def run_step(folder: Path, key: str, done_file: str, args: list[str]) -> None:
    """Run `alter args` for `folder` unless it is finished under `key`; work made under another key is discarded."""
    stamp = folder / KEY_FILE
    previous = stamp.read_text() if stamp.is_file() else None
    if previous == key and (folder / done_file).is_file():
        return
    if previous != key and folder.exists():
        if previous is not None:
            print(f"{folder}: made with other settings, recomputing", flush=True)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(stamp, key)
    _alter(*args)


def _copy_eval(source: Path, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for name in (*EVAL_FILES, KEY_FILE):
        shutil.copyfile(source / name, destination / name)


def run_bench(plan: BenchPlan) -> dict:
    data_key = folder_fingerprint(plan.data)
    model_key = folder_fingerprint(plan.model)
    models, keys = {}, {}
    for name, split in (("target", "full"), ("retain", plan.retain_split)):
        keys[name] = fingerprint("finetune", model_key, data_key, split, plan.precision, plan.finetune_args)
        models[name] = plan.cache / f"{name}-{keys[name]}"
        run_step(models[name], keys[name], "manifest.json",
                 ["finetune", "--model", plan.model, "--data", plan.data, "--split", split,
                  "--out", str(models[name]), "--resume", "--precision", plan.precision, *plan.finetune_args])
    evaluate = ["eval", "tofu", "--data", plan.data, "--forget-split", plan.forget_split, "--precision", plan.precision,
                *plan.eval_args]
    eval_key = fingerprint("eval", SUITE_VERSION, data_key, plan.forget_split, plan.precision, plan.eval_args)
    retain_key = fingerprint(keys["retain"], eval_key)
    retain_eval = models["retain"] / f"eval-{retain_key}"
    run_step(retain_eval, retain_key, "TOFU_SUMMARY.json",
             [*evaluate, "--model", str(models["retain"]), "--out", str(retain_eval)])
    reference = ["--retain-logs", str(retain_eval / "TOFU_EVAL.json")]
    target_key = fingerprint(keys["target"], retain_key)
    target_eval = models["target"] / f"eval-{target_key}"
    run_step(target_eval, target_key, "TOFU_SUMMARY.json",
             [*evaluate, "--model", str(models["target"]), "--out", str(target_eval), *reference])
    _copy_eval(retain_eval, plan.out / "eval" / "retain-log")
    _copy_eval(target_eval, plan.out / "eval" / "target")
    retain_self = plan.out / "eval" / "retain"  # the retain model against its own log: no second pass
    log = load_retain_log(retain_eval / "TOFU_EVAL.json")
    write_outputs(retain_self, log, *summarize(log, log))
    rows = {"target": _row(target_eval, models["target"]), "retain": _row(retain_self, models["retain"])}
    for variant in plan.variants:
        rows[variant.name] = _run_variant(plan, variant, models["target"], target_key, evaluate, reference)
    bench = {"model": plan.model, "data": plan.data, "forget_split": plan.forget_split,
             "models": {name: str(path) for name, path in models.items()}, "rows": rows}
    write_json(plan.out / "bench.json", bench)
    write_text(plan.out / "bench.md", markdown_table(rows))
    return bench


def _run_variant(plan: BenchPlan, variant: Variant, target: Path, target_key: str, evaluate: list[str],
                 reference: list[str]) -> dict:
    run_dir = plan.out / "runs" / variant.name
    overrides = [*variant.overrides, f"train.precision={plan.precision}"]
    recipe = build_recipe(variant.method, None, overrides).as_dict()  # the effective recipe, defaults included
    run_key = fingerprint("unlearn", target_key, recipe, plan.unlearn_args)
    sets = [item for override in overrides for item in ("--set", override)]
    run_step(run_dir, run_key, "manifest.json",
             ["unlearn", "--model", str(target), "--data", plan.data, "--forget-split", plan.forget_split,
              "--method", variant.method, "--out", str(run_dir), "--resume", *sets, *plan.unlearn_args])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    folder = plan.out / "eval" / variant.name
    model_args = ["--model", str(target), "--adapter", str(run_dir)] if manifest["output"] == "adapter" \
        else ["--model", str(run_dir)]
    run_step(folder, fingerprint(run_key, evaluate, reference), "TOFU_SUMMARY.json",
             [*evaluate, *model_args, "--out", str(folder), *reference])
    return {**_row(folder, run_dir), "overrides": variant.overrides}


def _row(eval_folder: Path, run_dir: Path) -> dict:
    summary = json.loads((eval_folder / "TOFU_SUMMARY.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    row = {key: summary.get(key) for key in summary if key != "notes"}
    log = json.loads((eval_folder / "TOFU_EVAL.json").read_text())
    for subset in ("forget", "retain"):  # mean answer NLL: the quantity every method's loss moves
        row[f"{subset}_nll"] = float(np.mean([item["nll"] for item in log[subset]["items"].values()]))
    row.update(method=manifest.get("method", manifest.get("kind")), wall_seconds=manifest["wall_seconds"],
               peak_memory_mb=manifest["peak_memory_mb"], tokens_per_second=manifest["tokens_per_second"],
               trainable_parameters=manifest["parameters"]["trainable"], run_dir=str(run_dir),
               eval_dir=str(eval_folder))
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
