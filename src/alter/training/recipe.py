"""Unlearning recipes: YAML files (configs/unlearn/*.yaml) and `--set section.key=value` overrides, validated
against the dataclasses that hold the defaults. Unknown keys and wrong types are errors, never ignored."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from alter.errors import UserError
from alter.methods import get_method
from alter.training.loop import TrainConfig


@dataclass
class LoraSettings:
    enabled: bool = False
    rank: int = 8
    alpha: int = 16
    learning_rate: float = 1e-4  # replaces train.learning_rate when LoRA is enabled: adapters need a larger step

    def __post_init__(self):
        if self.rank < 1 or self.learning_rate <= 0:
            raise ValueError(f"lora: rank must be at least 1 and learning_rate positive")


def default_unlearn_train() -> TrainConfig:
    return TrainConfig(epochs=5, learning_rate=1e-5, batch_size=8, warmup_ratio=0.1)


@dataclass
class Recipe:
    """What one unlearning run uses, and nothing it does not: a method that does not honour the `lora` section or
    `train.learning_rate` (ALTER: its params hold the rates) has them refused when given and left out of `as_dict`."""

    method: str
    train: TrainConfig = field(default_factory=default_unlearn_train)
    lora: LoraSettings = field(default_factory=LoraSettings)
    params: typing.Any = None

    def as_dict(self) -> dict:
        spec = get_method(self.method)
        train = dataclasses.asdict(self.train)
        if not spec.uses_learning_rate:
            del train["learning_rate"]
        out = {"method": self.method, "train": train, "lora": dataclasses.asdict(self.lora),
               "params": dataclasses.asdict(self.params)}
        if not spec.uses_lora:
            del out["lora"]
        return out

    @property
    def learning_rate(self) -> float:
        return self.lora.learning_rate if self.lora.enabled else self.train.learning_rate


def build_recipe(method: str | None, config_path: str | None, overrides: list[str]) -> Recipe:
    raw: dict = {}
    if config_path:
        raw = _read_yaml(Path(config_path))
    for assignment in overrides:
        _assign(raw, assignment)
    name = method or raw.get("method")
    if not name:
        raise UserError("no method: pass --method NAME or set `method:` in the --config file")
    if method and raw.get("method") and raw["method"].lower() != method.lower():
        raise UserError(f"--method {method} contradicts method: {raw['method']} in {config_path}")
    spec = get_method(name)
    unknown = set(raw) - {"method", "train", "lora", "params"}
    if unknown:
        raise UserError(f"recipe: unknown section {sorted(unknown)[0]!r} (sections: method, train, lora, params)")
    _refuse_unused(spec, raw)
    return Recipe(
        method=spec.name,
        train=_validated(_fill(replace(default_unlearn_train(), **spec.train_defaults), raw.get("train", {}), "train"),
                         "train"),
        lora=_fill(LoraSettings(), raw.get("lora", {}), "lora"),
        params=_validated(_fill(spec.params(), raw.get("params", {}), "params"), "params"),
    )


def _refuse_unused(spec, raw: dict) -> None:
    if not spec.uses_lora and raw.get("lora"):
        raise UserError(f"--method {spec.name} trains its own adapter: the lora section (and --lora) does not apply; "
                        "its size is params.rank")
    if not spec.uses_learning_rate and "learning_rate" in (raw.get("train") or {}):
        raise UserError(f"--method {spec.name}: train.learning_rate does not apply; the rates are params.lr_a (A) "
                        "and params.lr_b (heads)")


def _validated(instance, section: str):
    """Run the dataclass's own checks again on the filled values."""
    check = getattr(instance, "__post_init__", None)
    if check is not None:
        try:
            check()
        except ValueError as err:
            message = str(err)
            raise UserError(f"recipe: {message if message.startswith(section) else section + ': ' + message}") from None
    return instance


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: recipe file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: malformed YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a recipe is a mapping of sections (method, train, lora, params)")
    return raw


def _assign(raw: dict, assignment: str) -> None:
    if "=" not in assignment or "." not in assignment.split("=", 1)[0]:
        raise UserError(f"--set {assignment!r}: expected section.key=value, e.g. train.learning_rate=1e-4")
    path, value = assignment.split("=", 1)
    section, key = path.split(".", 1)
    raw.setdefault(section, {})
    if not isinstance(raw[section], dict):
        raise UserError(f"--set {assignment!r}: section {section!r} is not a mapping")
    raw[section][key] = yaml.safe_load(value)


def _fill(instance, values: dict, section: str):
    if not isinstance(values, dict):
        raise UserError(f"recipe: section {section!r} must be a mapping")
    hints = typing.get_type_hints(type(instance))
    known = {f.name for f in dataclasses.fields(instance)}
    for key, value in values.items():
        if key not in known:
            raise UserError(f"recipe: unknown key {section}.{key} (known: {', '.join(sorted(known)) or 'none'})")
        setattr(instance, key, _check_type(value, hints[key], f"{section}.{key}"))
    return instance


def _check_type(value, annotation, name: str):
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is float and isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (bool, str) and isinstance(value, kind):
            return value
    expected = " or ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise UserError(f"recipe: {name} must be {expected}, got {value!r}")
