"""`alter bench tofu|muse|wmdp`: methods side by side, on one data folder or on several generated worlds, each
unlearning run repeated over seeds, everything evaluated against the retain model of its world.

Units: a (world, seed) pair. Per world, the target (on `full`) and retain (on `retainXX`) models and their
evaluations are built once and cached in `--cache`, shared by every bench. Per unit, each variant unlearns from the
world's target in a fresh process and is evaluated. Every step folder carries `bench_key.txt`, a hash of everything
its output depends on; a step finished under the same key is reused, an unfinished one resumes, one made under
another key is recomputed (an unlearning run names the recipe settings that changed, from its `bench_settings.json`).
`bench.json` keeps every unit's row; `bench.md` shows the mean and a 95% interval over units, and how much of each
method's forgetting comes back under each out-of-sample probe ("undone").

MUSE adds two protocols over a world's disjoint forget requests 1..R (`forget_requestK`, `forget_uptoK`):
- scalability: each method forgets the growing sets `forget_upto1` .. `forget_upto{R-1}` from the target (the whole
  forget set is the main row);
- sustainability: request k starts from the result of request k-1. ALTER adds heads for each request
  (`params.extend`); the bench then removes request 1's heads from the last adapter (`alter requests --remove`), to
  show what comes back.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from alter import __version__
from alter.data.muse_world import MuseWorldSpec, write_muse_world
from alter.data.splits import retain_split_for
from alter.data.wmdp_world import WmdpWorldSpec, write_wmdp_world
from alter.data.world import WorldSpec, write_world
from alter.errors import UserError
from alter.evaluation.probes import FAMILIES
from alter.evaluation.suites import get_suite
from alter.io import write_json, write_text
from alter.methods import get_method
from alter.methods.alter.params import paper_overrides
from alter.methods.rmu import canonical_overrides
from alter.pipelines.isolated import run_isolated
from alter.pipelines.progress import Progress

KEY_FILE = "bench_key.txt"
SETTINGS_FILE = "bench_settings.json"
BUILT_IN_MODELS = ("tiny", "smollm2")
TOFU_ROW_KEYS = ("forget_quality", "model_utility", "forget_nll", "retain_nll", "forget_Q_A_Prob", "forget_Q_A_ROUGE",
                 "retain_Q_A_Prob", "retain_Q_A_ROUGE", "privleak")
PAPER_VARIANT = "alter-paper"
NAMED_VARIANTS = {PAPER_VARIANT: ("alter", paper_overrides), "rmu-canonical": ("rmu", canonical_overrides)}
PROTOCOLS = ("forget", "scalability", "sustainability")


@dataclass
class Variant:
    name: str
    method: str
    overrides: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> "Variant":
        """`npo`, `npo+lora`, `alter-paper`, `rmu-canonical`, or `name=method:key=value:...` (e.g.
        alter-q15=alter:params.q=1.5)."""
        if text in NAMED_VARIANTS:
            method, overrides = NAMED_VARIANTS[text]
            return cls(text, method, overrides())
        name, _, spec = text.partition("=") if "=" in text.split(":")[0] else (text, "", text)
        method, *overrides = spec.split(":")
        if method.endswith("+lora"):
            method = method.removesuffix("+lora")
            overrides.append("lora.enabled=true")
        get_method(method)
        return cls(name, method, overrides)


@dataclass
class World:
    name: str
    data: str
    tuning: bool = False


@dataclass
class BenchPlan:
    model: str
    worlds: list[World]
    forget_split: str
    variants: list[Variant]
    out: Path
    cache: Path
    precision: str  # resolved (never "auto"), so it keys every cached step
    seeds: list[int] = field(default_factory=lambda: [0])
    probes: str = "all"
    finetune_options: dict = field(default_factory=dict)  # epochs, learning_rate, batch_size, max_steps
    eval_settings: dict = field(default_factory=dict)  # EvalSettings fields
    audit: bool = False  # also run `alter audit` on every unlearned model
    suite: str = "tofu"  # tofu, muse or wmdp
    protocols: tuple[str, ...] = ("forget",)  # MUSE: also scalability, sustainability

    @property
    def retain_split(self) -> str:
        return retain_split_for(self.forget_split) if self.suite == "tofu" else "retain"


WORLD_WRITERS = {"tofu": lambda seed, size, folder: write_world(WorldSpec(authors=size, seed=seed), folder),
                 "muse": lambda seed, size, folder: write_muse_world(MuseWorldSpec(seed=seed), folder),
                 "wmdp": lambda seed, size, folder: write_wmdp_world(WmdpWorldSpec(seed=seed), folder)}


def generated_worlds(out: Path, count: int, authors: int, tuning: bool, suite: str = "tofu") -> list[World]:
    """Worlds of seeds 1..count (held out), plus seed 0 (the tuning world) when asked; written once."""
    seeds = ([0] if tuning else []) + list(range(1, count + 1))
    worlds = []
    for seed in seeds:
        folder = out / "worlds" / f"seed-{seed}"
        if not (folder / "full.json").is_file():
            WORLD_WRITERS[suite](seed, authors, folder)
        worlds.append(World(f"seed-{seed}", str(folder), tuning=seed == 0))
    return worlds


def with_paper_variant(variants: list[Variant]) -> list[Variant]:
    """Every bench that runs ALTER also runs the paper's reading of it."""
    if any(v.method == "alter" for v in variants) and not any(v.name == PAPER_VARIANT for v in variants):
        return [*variants, Variant.parse(PAPER_VARIANT)]
    return variants


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


def is_done(folder: Path, key: str, done_file: str) -> bool:
    stamp = folder / KEY_FILE
    return stamp.is_file() and stamp.read_text() == key and (folder / done_file).is_file()


def flat_settings(settings: dict, prefix: str = "") -> dict:
    """Nested settings as {"section.key": value}."""
    flat = {}
    for name, value in settings.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def changed_settings(old: dict, new: dict, shown: int = 5) -> str:
    """The settings that differ, as "name: old -> new" (at most `shown`, then how many more); "" if none does."""
    old, new = flat_settings(old), flat_settings(new)
    names = sorted(name for name in old.keys() | new.keys() if old.get(name, "unset") != new.get(name, "unset"))
    parts = [f"{name}: {old.get(name, 'unset')} -> {new.get(name, 'unset')}" for name in names[:shown]]
    if len(names) > shown:
        parts.append(f"and {len(names) - shown} more")
    return ", ".join(parts)


def _made_with(folder: Path, settings: dict | None) -> str:
    """What a folder made under another key was made with, where both sides' settings are known."""
    stored = folder / SETTINGS_FILE
    if settings is None or not stored.is_file():
        return ""
    as_stored = json.loads(json.dumps(settings, default=str))  # tuples read back as lists
    change = changed_settings(json.loads(stored.read_text()), as_stored)
    return f" ({change})" if change else " (same settings, an earlier input: model, data or a previous step)"


def run_step(folder: Path, key: str, done_file: str, function: str, progress: "Progress | None" = None,
             key_settings: dict | None = None, **kwargs) -> None:
    """Run `function(**kwargs)` in a fresh process for `folder` unless it is finished under `key`; work made under
    another key is discarded. `key_settings` (plain data, part of `key`) is kept beside the key, so that a rerun
    under other settings says which changed."""
    kind = function.split(":")[1]
    if is_done(folder, key, done_file):
        if progress:
            progress.skipped(kind)
        return
    stamp = folder / KEY_FILE
    if folder.exists():
        if stamp.is_file() and stamp.read_text() != key:
            print(f"{folder}: made with other settings{_made_with(folder, key_settings)}, recomputing", flush=True)
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(stamp, key)
    if key_settings is not None:
        write_json(folder / SETTINGS_FILE, key_settings)
    print(f"bench: {kind} -> {folder}", flush=True)
    started = time.perf_counter()
    run_isolated(function, **kwargs)
    if progress:
        progress.finished(kind, time.perf_counter() - started)


def run_bench(plan: BenchPlan) -> dict:
    suite = get_suite(plan.suite)
    _check_sequential_variants(plan)
    runs = len(plan.worlds) * len(plan.seeds) * len(plan.variants) * _runs_per_variant(plan)
    progress = Progress(plan.model, plan.precision, Counter(
        finetune_step=2 * len(plan.worlds), eval_step=2 * len(plan.worlds) + runs, unlearn_step=runs,
        audit_step=runs if plan.audit else 0))
    units = []
    references = {}
    for world in plan.worlds:
        references[world.name] = _references(plan, world, suite, progress)
        for seed in plan.seeds:
            for variant in plan.variants:
                unit = {"world": world.name, "tuning": world.tuning, "seed": seed}
                row = _run_variant(plan, world, variant, seed, references[world.name], suite, progress)
                units.append({**unit, "run": variant.name, "protocol": "forget", **row})
                units.extend({**unit, **extra} for extra in _muse_protocols(plan, world, variant, seed,
                                                                            references[world.name], suite, progress))
    for world in plan.worlds:
        for name in ("target", "retain"):
            units.append({"world": world.name, "tuning": world.tuning, "seed": None, "run": name,
                          "protocol": "forget", **references[world.name][name]})
    about = {"suite": plan.suite, "model": plan.model, "forget_split": plan.forget_split, "precision": plan.precision,
             "seeds": plan.seeds, "worlds": [vars(world) for world in plan.worlds], "protocols": list(plan.protocols),
             "variants": [vars(variant) for variant in plan.variants],
             "data": plan.worlds[0].data if len(plan.worlds) == 1 else str(plan.out / "worlds")}
    return _write_bench(plan.out, about, units)


def _write_bench(out: Path, about: dict, units: list[dict]) -> dict:
    """bench.json (every unit, the rows over held-out worlds and apart those of the tuning world) and bench.md. With
    no held-out unit, `rows` are the tuning world's and there are no `tuning_rows`: one table, not the same twice."""
    if about["suite"] == "tofu":
        _add_undone(units)
    suite = about["suite"]
    held_out = any(not unit["tuning"] for unit in units)
    apart = held_out and any(unit["tuning"] for unit in units)
    bench = {**about, "units": units,
             "rows": aggregate_rows(units, tuning=not held_out),
             "tuning_rows": aggregate_rows(units, tuning=True) if apart else None,
             "paired": paired_differences(units, not held_out, suite),
             "tuning_paired": paired_differences(units, True, suite) if apart else None}
    write_json(out / "bench.json", bench)
    write_text(out / "bench.md", markdown(bench))
    return bench


COLLECT_FIELDS = ("world", "run", "run_dir", "eval_dir")


def collect_bench(listing: list[dict], out: Path) -> dict:
    """TOFU's bench.json and bench.md over runs made outside one bench (`alter unlearn` and `alter eval tofu`, e.g. a
    new default beside earlier benches' baselines), computed as a bench computes them. Each entry names its world,
    run, run_dir (the run's or model's folder, with manifest.json), eval_dir, and optionally seed and tuning (true for
    the tuning world; on any one entry of a world it marks the whole world); each world needs a `target` and a
    `retain` entry (the retain model against its own log)."""
    suite = get_suite("tofu")
    units, manifests = [], {"target": [], "runs": []}
    for number, entry in enumerate(listing, 1):
        missing = [key for key in COLLECT_FIELDS if not entry.get(key)]
        if missing:
            raise UserError(f"entry {number}: missing {', '.join(missing)}")
        eval_dir, run_dir = Path(entry["eval_dir"]), Path(entry["run_dir"])
        for path in (eval_dir / suite.summary_file, eval_dir / suite.log_file, run_dir / "manifest.json"):
            if not path.is_file():
                raise UserError(f"entry {number} ({entry['world']}/{entry['run']}): no {path}")
        reference = entry["run"] in ("target", "retain")
        if entry["run"] != "retain":
            manifests["target" if reference else "runs"].append(json.loads((run_dir / "manifest.json").read_text()))
        units.append({"world": entry["world"], "tuning": bool(entry.get("tuning", False)),
                      "seed": None if reference else entry.get("seed", 0), "run": entry["run"], "protocol": "forget",
                      **_row(eval_dir, run_dir, suite)})
    worlds = {}
    for unit in units:
        worlds.setdefault(unit["world"], []).append(unit)
    for world, mine in worlds.items():
        if not {"target", "retain"} <= {unit["run"] for unit in mine}:
            raise UserError(f"world {world}: needs a 'target' and a 'retain' entry")
        tuning = any(unit["tuning"] for unit in mine)  # one entry marks the whole world, its references included
        for unit in mine:
            unit["tuning"] = tuning
    about = {"suite": "tofu", "collected": listing,
             "model": _named_once(m.get("model") for m in manifests["target"]),
             "forget_split": _named_once(m.get("forget_split") for m in manifests["runs"]),
             "seeds": sorted({unit["seed"] for unit in units if unit["seed"] is not None}),
             "worlds": [{"name": world, "tuning": mine[0]["tuning"]} for world, mine in worlds.items()]}
    return _write_bench(out, about, units)


def _named_once(values) -> str:
    """The runs' common value of a manifest field, or all of them (a listing may mix models or forget splits)."""
    return ", ".join(sorted({str(v) for v in values if v})) or "unknown"


def _check_sequential_variants(plan: BenchPlan) -> None:
    """Before any work: a method other than ALTER continues a sequence from a full model, so it cannot output an
    adapter."""
    if plan.suite != "muse" or "sustainability" not in plan.protocols:
        return
    for variant in plan.variants:
        if variant.method != "alter" and _recipe(plan, variant, 0)["lora"]["enabled"]:
            raise UserError(f"--methods {variant.name}: sequential requests continue from a full model, and this run "
                            "outputs a LoRA adapter (drop +lora, or leave out the sustainability protocol)")


def world_requests(world: World) -> int:
    """How many sequential forget requests a MUSE world holds (`forget_request1`, `forget_request2`, ...)."""
    count = 0
    while (Path(world.data) / f"forget_request{count + 1}.json").is_file():
        count += 1
    return count


def _runs_per_variant(plan: BenchPlan) -> int:
    if plan.suite != "muse":
        return 1
    requests = world_requests(plan.worlds[0])
    return 1 + ("scalability" in plan.protocols) * max(0, requests - 1) + ("sustainability" in plan.protocols) * requests


def _muse_protocols(plan: BenchPlan, world: World, variant: Variant, seed: int, reference: dict, suite,
                    progress: Progress) -> list[dict]:
    """Scalability and sustainability rows of one variant (MUSE only): each row names its protocol and how many
    requests it has forgotten."""
    if plan.suite != "muse":
        return []
    requests = world_requests(world)
    rows = []
    if "scalability" in plan.protocols:
        for upto in range(1, requests):
            row = _run_variant(plan, world, variant, seed, reference, suite, progress, f"forget_upto{upto}",
                               f"{variant.name}@upto{upto}")
            rows.append({"run": f"{variant.name}@upto{upto}", "protocol": "scalability", "requests": upto, **row})
    if "sustainability" in plan.protocols:
        rows.extend(_sequential(plan, world, variant, seed, reference, suite, progress, requests))
    return rows


def _sequential(plan: BenchPlan, world: World, variant: Variant, seed: int, reference: dict, suite,
                progress: Progress, requests: int) -> list[dict]:
    """Requests 1..R in turn, each from the previous result; for ALTER, then the last adapter without request 1."""
    is_alter = variant.method == "alter"
    # 'auto' is the content gate on MUSE's text rows, which name no subjects
    if is_alter and _recipe(plan, variant, seed)["params"]["router"] not in ("content", "auto"):
        print(f"bench: {variant.name}: sequential requests need router 'content'; its sustainability rows are skipped",
              flush=True)
        return []
    rows, previous = [], None
    for request in range(1, requests + 1):
        split = "forget_upto1" if request == 1 else f"forget_request{request}"  # request 1 alone = upto1's run
        row = _run_variant(plan, world, variant, seed, reference, suite, progress, split,
                           f"{variant.name}@upto1" if request == 1 else f"{variant.name}@request{request}", previous)
        rows.append({"run": f"{variant.name}@seq{request}", "protocol": "sustainability", "requests": request, **row})
        previous = row["run_dir"]
    if is_alter and requests > 1:
        rows.append(_without_first_request(plan, world, variant, seed, reference, suite, progress, previous, requests))
    return rows


def _without_first_request(plan: BenchPlan, world: World, variant: Variant, seed: int, reference: dict, suite,
                           progress: Progress, adapter: str, requests: int) -> dict:
    from alter.adapters.model import remove_request

    folder = plan.out / "runs" / world.name / f"seed-{seed}" / f"{variant.name}@seq{requests}-without1"
    key = fingerprint("remove", folder_fingerprint(adapter), 1)
    if not is_done(folder, key, "alter_config.json"):
        shutil.rmtree(folder, ignore_errors=True)
        remove_request(Path(adapter), 1, folder)
        shutil.copy(Path(adapter) / "manifest.json", folder / "manifest.json")
        write_text(folder / KEY_FILE, key)
    evaluation = plan.out / "eval" / world.name / f"seed-{seed}" / folder.name
    _evaluate(plan, world, suite, evaluation, fingerprint(key, suite.version, _eval_options(plan, world),
                                                          _eval_settings(plan)),
              reference["target_dir"], str(folder), reference["retain_log"], progress)
    return {"run": f"{variant.name}@seq{requests}-without1", "protocol": "sustainability", "requests": requests,
            "removed_request": 1, **_row(evaluation, folder, suite)}


def _eval_settings(plan: BenchPlan) -> dict:
    return {"precision": plan.precision, **plan.eval_settings}


def _eval_options(plan: BenchPlan, world: World) -> dict:
    if plan.suite != "tofu":
        return {"data": world.data}
    return {"data": world.data, "forget_split": plan.forget_split, "probes": plan.probes}


def _references(plan: BenchPlan, world: World, suite, progress: Progress) -> dict:
    """The world's target and retain models (cached), their evaluations, and the retain log."""
    data_key = folder_fingerprint(world.data)
    model_key = folder_fingerprint(plan.model)
    models, keys = {}, {}
    for name, split in (("target", "full"), ("retain", plan.retain_split)):
        keys[name] = fingerprint("finetune", model_key, data_key, split, plan.precision, plan.finetune_options)
        models[name] = plan.cache / f"{name}-{keys[name]}"
        run_step(models[name], keys[name], "manifest.json", "alter.pipelines.steps:finetune_step", progress,
                 model=plan.model,
                 data=world.data, split=split, out=str(models[name]), precision=plan.precision,
                 options=plan.finetune_options)
    eval_key = fingerprint("eval", suite.version, data_key, _eval_options(plan, world), _eval_settings(plan))
    retain_key = fingerprint(keys["retain"], eval_key)
    retain_eval = models["retain"] / f"eval-{retain_key}"
    _evaluate(plan, world, suite, retain_eval, retain_key, str(models["retain"]), None, None, progress)
    retain_log = str(retain_eval / suite.log_file)
    target_key = fingerprint(keys["target"], retain_key)
    target_eval = models["target"] / f"eval-{target_key}"
    _evaluate(plan, world, suite, target_eval, target_key, str(models["target"]), None, retain_log, progress)
    retain_self = plan.out / "eval" / world.name / "retain"  # the retain model against its own log
    _evaluate(plan, world, suite, retain_self, fingerprint(retain_key, "self"), str(models["retain"]), None,
              retain_log, None, reuse_log=retain_eval)
    return {"target": _row(target_eval, models["target"], suite), "retain": _row(retain_self, models["retain"], suite),
            "target_dir": str(models["target"]), "retain_dir": str(models["retain"]), "target_key": target_key,
            "retain_log": retain_log}


def _evaluate(plan: BenchPlan, world: World, suite, folder: Path, key: str, model: str, adapter: str | None,
              reference: str | None, progress: Progress | None, reuse_log: Path | None = None) -> None:
    if reuse_log is not None:  # same model, same passes: summarise the cached log against the reference only
        from alter.evaluation.suites.base import load_reference, summarize_with, write_outputs

        stamp = folder / KEY_FILE
        if not (stamp.is_file() and stamp.read_text() == key and (folder / suite.summary_file).is_file()):
            log = load_reference(reuse_log / suite.log_file, suite)
            write_outputs(folder, suite, log, *summarize_with(suite, log, load_reference(reference, suite), []))
            write_text(stamp, key)
        return
    run_step(folder, key, suite.summary_file, "alter.pipelines.steps:eval_step", progress, suite=suite.name,
             model=model,
             adapter=adapter, options=_eval_options(plan, world), settings=_eval_settings(plan), out=str(folder),
             reference=reference)


def _recipe(plan: BenchPlan, variant: Variant, seed: int, extra: list[str] = ()) -> dict:
    """The effective recipe of a variant's run, defaults included."""
    from alter.training.recipe import build_recipe

    overrides = [*variant.overrides, f"train.precision={plan.precision}", f"train.seed={seed}", *extra]
    return build_recipe(variant.method, None, overrides).as_dict()


def _run_variant(plan: BenchPlan, world: World, variant: Variant, seed: int, reference: dict, suite,
                 progress: Progress, forget_split: str | None = None, name: str | None = None,
                 previous: str | None = None) -> dict:
    """One unlearning run of `variant` on `forget_split` (default: the bench's) from the world's target, and its
    evaluation. After a `previous` run (sequential requests), ALTER extends that run's adapter and any other method
    starts from that run's model."""
    forget_split = forget_split or plan.forget_split
    name = name or (variant.name if forget_split == plan.forget_split else f"{variant.name}@{forget_split}")
    run_dir = plan.out / "runs" / world.name / f"seed-{seed}" / name
    extends = previous is not None and variant.method == "alter"
    start = previous if previous is not None and not extends else None
    extra = [f"params.extend={previous}"] if extends else []
    overrides = [*variant.overrides, f"train.precision={plan.precision}", f"train.seed={seed}", *extra]
    start_key = fingerprint(reference["target_key"], folder_fingerprint(previous)) if previous \
        else reference["target_key"]
    recipe = _recipe(plan, variant, seed, extra)
    run_key = fingerprint("unlearn", start_key, recipe, *([forget_split] if forget_split != plan.forget_split else []))
    run_step(run_dir, run_key, "manifest.json", "alter.pipelines.steps:unlearn_step", progress,
             key_settings=recipe,
             model=start or reference["target_dir"],
             data=world.data, forget_split=forget_split, retain_split=plan.retain_split,
             method=variant.method, overrides=overrides, out=str(run_dir))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    folder = plan.out / "eval" / world.name / f"seed-{seed}" / name
    adapter = str(run_dir) if manifest["output"] == "adapter" else None
    model = (start or reference["target_dir"]) if adapter else str(run_dir)
    _evaluate(plan, world, suite, folder, fingerprint(run_key, suite.version, _eval_options(plan, world),
                                                      _eval_settings(plan)),
              model, adapter, reference["retain_log"], progress)
    row = {**_row(folder, run_dir, suite), "overrides": variant.overrides, "output": manifest["output"]}
    if plan.audit:
        row.update(_audit(plan, world, variant, seed, run_key, model, adapter, reference, progress))
    return row


def _audit(plan: BenchPlan, world: World, variant: Variant, seed: int, run_key: str, model: str,
           adapter: str | None, reference: dict, progress: Progress) -> dict:
    """`alter audit` of one unlearned model; returns `audit_<attack>_undone` for each attack (and the audit folder)."""
    folder = plan.out / "audit" / world.name / f"seed-{seed}" / variant.name
    run_step(folder, fingerprint(run_key, "audit", _eval_settings(plan)), "AUDIT.json",
             "alter.pipelines.steps:audit_step", progress, model=model, adapter=adapter, data=world.data,
             forget_split=plan.forget_split, reference=reference["target_dir"], retain_model=reference["retain_dir"],
             out=str(folder), precision=plan.precision, settings=plan.eval_settings, cache=str(plan.cache / "audit"))
    attacks = json.loads((folder / "AUDIT.json").read_text())["attacks"]
    return {"audit_dir": str(folder), **{f"audit_{name}_undone": result.get("undone")
                                         for name, result in attacks.items() if name != "none"}}


def _row(eval_folder: Path, run_dir: Path, suite) -> dict:
    summary = json.loads((eval_folder / suite.summary_file).read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    row = {key: value for key, value in summary.items() if key not in ("notes", "machine")}
    log = json.loads((eval_folder / suite.log_file).read_text())
    for subset in ("forget", "retain") if suite.name == "tofu" else ():  # mean answer NLL: what every loss moves
        row[f"{subset}_nll"] = float(np.mean([item["nll"] for item in log[subset]["items"].values()]))
    row.update(method=manifest.get("method", manifest.get("kind")), wall_seconds=manifest["wall_seconds"],
               peak_memory_mb=manifest["peak_memory_mb"], tokens_per_second=manifest["tokens_per_second"],
               trainable_parameters=manifest["parameters"]["trainable"], eval_seconds=log["meta"]["wall_seconds"],
               run_dir=str(run_dir), eval_dir=str(eval_folder), machine=manifest.get("machine"))
    if "alter" in manifest:
        facts = manifest["alter"]
        row.update(high_entropy_fraction=facts.get("high_entropy_fraction"), forget_heads=facts["clustering"]["heads"],
                   subdomain_agreement=facts["clustering"].get("agreement_with_subjects"))
    if "verdict" in manifest:
        row["verdict"] = manifest["verdict"]
    return row


def undone(value: float | None, target: float | None, retain: float | None) -> float | None:
    """Share of the retain-to-target gap that is back: 0 = as forgotten as the retain model, 1 = the target."""
    if None in (value, target, retain) or abs(target - retain) < 1e-9:
        return None
    return (value - retain) / (target - retain)


def _add_undone(units: list[dict]) -> None:
    """For each unit, 'undone' of the forget answer probability in sample and under each probe family, against its
    own world's target and retain models."""
    references = {(u["world"], u["run"]): u for u in units if u["run"] in ("target", "retain")}
    for unit in units:
        target, retain = references[(unit["world"], "target")], references[(unit["world"], "retain")]
        for family in ("in_sample", *FAMILIES):
            key = "forget_Q_A_Prob" if family == "in_sample" else f"forget_probe_{family}_Q_A_Prob"
            unit[f"undone_{family}"] = undone(unit.get(key), target.get(key), retain.get(key))


def interval(values: list[float]) -> dict:
    """Mean and a 95% t-interval over units (no interval from a single unit)."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = float(np.mean(values))
    if len(values) < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1}
    half = float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(values)}


def _numeric_keys(units: list[dict]) -> list[str]:
    """The keys holding a number in any of the units (a key can be None in some: a probe family a model skips)."""
    def is_number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    keys = dict.fromkeys(k for u in units for k in u)
    return [k for k in keys if k != "seed" and any(is_number(u.get(k)) for u in units)]


def aggregate_rows(units: list[dict], tuning: bool) -> dict:
    """Per run: the mean of every numeric key over the units (held-out worlds, or the tuning world), and
    `intervals` with the 95% interval of each."""
    chosen = [u for u in units if u["tuning"] == tuning]
    rows: dict[str, dict] = {}
    for name in dict.fromkeys(u["run"] for u in chosen):
        mine = [u for u in chosen if u["run"] == name]
        stats_of = {k: interval([u.get(k) for u in mine]) for k in _numeric_keys(mine)}
        rows[name] = {**{k: v["mean"] for k, v in stats_of.items()}, "intervals": stats_of, "units": len(mine),
                      **{k: mine[0][k] for k in ("method", "run_dir", "eval_dir", "machine", "verdict", "protocol")
                         if k in mine[0]}}
    return rows


def paired_keys(suite: str) -> tuple[str, ...]:
    if suite != "tofu":
        return row_keys(suite)
    return ("forget_quality", "model_utility", "privleak", *(f"undone_{f}" for f in ("in_sample", *FAMILIES)))


def paired_differences(units: list[dict], tuning: bool, suite: str = "tofu") -> dict:
    """Per run: its difference from the bench's first run (the baseline, e.g. ALTER's default) on the units both ran
    (same world and seed), each of `paired_keys`' mean and 95% t-interval over those units; `keys`: those with a value.
    Worlds differ more than methods do, so comparing the two means' intervals hides differences that every world
    shows; the paired interval does not."""
    chosen = [u for u in units if u["tuning"] == tuning and u.get("protocol", "forget") == "forget"
              and u["run"] not in ("target", "retain")]
    names = list(dict.fromkeys(u["run"] for u in chosen))
    if len(names) < 2:
        return {}
    baseline = {(u["world"], u["seed"]): u for u in chosen if u["run"] == names[0]}
    paired = {"baseline": names[0], "rows": {}}
    for name in names[1:]:
        pairs = [(u, baseline[(u["world"], u["seed"])]) for u in chosen
                 if u["run"] == name and (u["world"], u["seed"]) in baseline]
        differences = {k: interval([None if None in (u.get(k), b.get(k)) else u[k] - b[k] for u, b in pairs])
                       for k in paired_keys(suite)}
        paired["rows"][name] = {**{k: v["mean"] for k, v in differences.items()}, "intervals": differences,
                                "units": len(pairs)}
    paired["keys"] = [k for k in paired_keys(suite) if any(row[k] is not None for row in paired["rows"].values())]
    return paired


def _cell(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    spread = row.get("intervals", {}).get(key, {})
    if spread.get("low") is not None:
        return f"{value:.3g} ± {(spread['high'] - spread['low']) / 2:.2g}"
    return f"{value:.3g}"


# WMDP: the cloze form, because small models pick letters at chance whatever they know (docs/metrics.md)
UTILITY_KEYS = {"tofu": "model_utility", "muse": "retain_knowmem_ROUGE", "wmdp": "general_cloze_accuracy"}


def row_keys(suite: str) -> tuple[str, ...]:
    return TOFU_ROW_KEYS if suite == "tofu" else get_suite(suite).table_keys


def markdown(bench: dict) -> str:
    suite = bench.get("suite", "tofu")
    parts = []
    bench_units = bench.get("units") or []
    only_tuning = bool(bench_units) and all(unit["tuning"] for unit in bench_units)
    main_title = "tuning world (seed 0)" if only_tuning else "held-out worlds" if bench["tuning_rows"] else ""
    for title, rows, paired in ((main_title, bench["rows"], bench.get("paired")),
                                ("tuning world (seed 0)", bench["tuning_rows"], bench.get("tuning_paired"))):
        if not rows:
            continue
        units = max(row["units"] for row in rows.values())
        label = f"{title}: " if title else ""
        parts.append(f"### {label}{units} units (world x seed; mean ± 95% half-interval)\n" if title or units > 1
                     else "")
        main = {name: row for name, row in rows.items() if row.get("protocol", "forget") == "forget"}
        parts.append(markdown_table(main, suite))
        parts.append(undone_table(main))
        parts.append(paired_table(paired))
        parts.append(audit_table(main))
        parts.append(protocol_table(rows, "scalability"))
        parts.append(protocol_table(rows, "sustainability"))
    return "\n".join(part for part in parts if part)


def markdown_table(rows: dict, suite: str = "tofu") -> str:
    keys, utility = row_keys(suite), UTILITY_KEYS[suite]
    reference = rows.get("target", {}).get(utility)
    header = ["run", *keys, "utility kept", "trainable", "wall s", "eval s", "peak MB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in rows.items():
        values = [_cell(row, k) for k in keys]
        kept = f"{row[utility] / reference:.2f}" if reference and row.get(utility) is not None else "-"
        lines.append(f"| {name} | " + " | ".join(values) + f" | {kept} | {row.get('trainable_parameters') or 0:,.0f} | "
                     f"{row.get('wall_seconds') or 0:.0f} | {row.get('eval_seconds') or 0:.0f} | "
                     f"{row.get('peak_memory_mb') or 0:.0f} |")
    return "\n".join(lines) + "\n"


PROTOCOL_TITLES = {
    "scalability": "Scalability: each method forgets the first K requests at once, from the target (the main table "
                   "has all of them)",
    "sustainability": "Sustainability: request k starts from the result of request k-1; ALTER adds heads per request, "
                      "and `-without1` is its last adapter with request 1's heads removed"}


def protocol_table(rows: dict, protocol: str) -> str:
    """MUSE's scalability or sustainability rows, with each request's KnowMem and VerbMem ROUGE where the data names
    requests."""
    chosen = {name: row for name, row in rows.items() if row.get("protocol") == protocol}
    if not chosen:
        return ""
    per_request = sorted({k for row in chosen.values() for k in row if k.startswith("forget_request")
                          and k.endswith("_ROUGE")}, key=lambda k: (k.split("_")[2], k))
    keys = ["requests", *per_request, "forget_knowmem_ROUGE", "forget_verbmem_ROUGE", "retain_knowmem_ROUGE",
            "privleak"]
    header = ["run", *[k.removesuffix("_ROUGE").replace("forget_request", "req") for k in keys], "wall s"]
    lines = [PROTOCOL_TITLES[protocol] + "\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in {**{n: r for n, r in rows.items() if n in ("target", "retain")}, **chosen}.items():
        cells = [name, *[_cell(row, k) for k in keys], f"{row.get('wall_seconds') or 0:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def undone_table(rows: dict) -> str:
    """How much of the forgotten probability comes back, in sample and per probe family (0 = as the retain model,
    1 = as the target); and, for ALTER, the share of retain answer tokens its gate acted on."""
    families = [f for f in ("in_sample", *FAMILIES) if any(row.get(f"undone_{f}") is not None for row in rows.values())]
    if len(families) < 2:
        return ""
    header = ["run", *[f"undone {f}" for f in families], "max retain gate rate"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in rows.items():
        if name in ("target", "retain"):
            continue
        gates = [v for k, v in row.items() if k.startswith("retain") and k.endswith("_gate_rate") and v is not None]
        cells = [name, *[_cell(row, f"undone_{f}") for f in families], f"{max(gates):.3f}" if gates else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_table(paired: dict | None) -> str:
    """`paired_differences` as a table: each run minus the baseline, mean ± 95% half-interval over shared units."""
    if not paired or not paired["rows"]:
        return ""
    rows, keys = paired["rows"], paired["keys"]
    header = ["run", "units", *(k.replace("undone_", "undone ") for k in keys)]
    lines = [f"Paired against `{paired['baseline']}` (run minus `{paired['baseline']}` on the same world and seed; "
             "mean ± 95% half-interval over those units)\n",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in rows.items():
        lines.append("| " + " | ".join([name, str(row["units"]), *(_cell(row, k) for k in keys)]) + " |")
    return "\n".join(lines) + "\n"


def audit_table(rows: dict) -> str:
    """`--audit`: how much of the forgotten probability each attack brings back (0 = the retain model under the same
    attack, 1 = the target under it)."""
    attacks = list(dict.fromkeys(k for row in rows.values() for k in row
                                 if k.startswith("audit_") and k.endswith("_undone")))
    if not attacks:
        return ""
    header = ["run", *[k.removeprefix("audit_").removesuffix("_undone") for k in attacks]]
    lines = ["Audit: undone after each attack (`alter audit`, docs/audit.md)\n",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in rows.items():
        if name not in ("target", "retain"):
            lines.append("| " + " | ".join([name, *(_cell(row, k) for k in attacks)]) + " |")
    return "\n".join(lines) + "\n"


def check_plan(plan: BenchPlan) -> None:
    if not plan.variants:
        raise UserError("--methods: no method given")
