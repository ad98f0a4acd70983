"""TOFU-format data: the hub dataset `locuslab/TOFU` or a local folder laid out like it.

A local folder holds one file per split, `<split>.json` (a JSON array) or `<split>.jsonl` (JSON lines).
Split names follow the hub: full, forget01/05/10, retain90/95/99, forgetXX_perturbed, retain_perturbed,
real_authors(_perturbed), world_facts(_perturbed), holdoutXX. Derived splits, when no file holds them:
`full` = retain90 + forget10, `forgetXX_perturbed` = forgetXX (the local files carry the perturbed fields),
`real_authors`/`world_facts` = their `_perturbed` file.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from alter.errors import UserError

QA_FIELDS = ("question", "answer")
METADATA_FILES = ("world.json",)  # written by the world generators beside the splits
REFUSALS_FILE = "idontknow.jsonl"
HELD_OUT_FIELDS = ("probe_question",)  # read by evaluation only: not even a tiny model's tokenizer sees them
PERTURBED_FIELDS = ("question", "answer", "paraphrased_answer", "perturbed_answer")
GENERAL_FIELDS = ("question", "answer", "perturbed_answer")
HUB_ID = "locuslab/TOFU"

# Which fields each kind of split must have (checked on every item), by a pattern of its name.
REQUIRED_FIELDS = {
    r"forget\d+(_perturbed)?": PERTURBED_FIELDS,  # TOFU's forget01, forget05_perturbed...
    r"retain_perturbed": PERTURBED_FIELDS,
    r"real_authors.*": GENERAL_FIELDS,
    r"world_facts.*": GENERAL_FIELDS,
}


def required_fields(split: str) -> tuple[str, ...]:
    for pattern, fields in REQUIRED_FIELDS.items():
        if re.fullmatch(pattern, split):
            return fields
    return QA_FIELDS


@dataclass
class TofuData:
    """A TOFU-format data source: a local folder, or the hub when `root` is the hub id."""

    root: str
    _loaded: dict[str, list[dict]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_local(self) -> bool:
        return self.root != HUB_ID

    def load(self, split: str) -> list[dict]:
        """The split's validated items (read once per instance; callers must not modify them)."""
        if split not in self._loaded:
            self._loaded[split] = self._read_validated(split)
        return self._loaded[split]

    def _read_validated(self, split: str) -> list[dict]:
        rows = self._read_local(split) if self.is_local else self._read_hub(split)
        where = self._describe(split)
        if not rows:
            raise UserError(f"{where}: split {split!r} is empty")
        validate_rows(rows, required_fields(split), where)
        return rows

    def has(self, split: str) -> bool:
        try:
            self.load(split)
        except UserError:
            return False
        return True

    def fingerprint(self, splits: list[str]) -> str:
        digest = hashlib.sha256()
        for split in splits:
            digest.update(split.encode())
            digest.update(json.dumps(self.load(split), sort_keys=True).encode())
        return digest.hexdigest()[:16]

    def texts(self) -> list[str]:
        """Every string of a local folder, questions in the plain prompt format: what a tiny model's tokenizer is
        trained on."""
        from alter.data.formatting import PLAIN_PROMPT

        root = Path(self.root)
        if not self.is_local or not root.is_dir():
            raise UserError(f"{self.root}: data folder not found (model 'tiny' trains its tokenizer on a local folder)")
        texts = []
        for path in sorted(list(root.glob("*.json")) + list(root.glob("*.jsonl"))):
            if path.name == REFUSALS_FILE:
                texts.extend(path.read_text().splitlines())
            elif path.name not in METADATA_FILES:
                for row in read_rows(path):
                    if isinstance(row, dict) and "question" in row:
                        texts.append(PLAIN_PROMPT.format(question=row["question"]) + str(row.get("answer", "")))
                        texts.extend(v for k, v in _strings(row) if v != row["question"] and k not in HELD_OUT_FIELDS)
                    elif isinstance(row, dict) and isinstance(row.get("text"), str):
                        texts.append(row["text"])
        return texts

    @staticmethod
    def questions_per_author(root: str) -> int:
        """TOFU's authors are contiguous blocks of 20 rows; a generated world says its own count in world.json."""
        info = Path(root) / "world.json"
        if info.is_file():
            try:
                return int(json.loads(info.read_text()).get("questions_per_author", 20))
            except (json.JSONDecodeError, ValueError, TypeError):
                pass
        return 20

    def refusals(self) -> list[str] | None:
        """Refusal answers (`idontknow.jsonl`, one per line), or None when the folder has none."""
        path = Path(self.root) / REFUSALS_FILE
        if self.is_local and path.is_file():
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            return lines or None
        return None

    def _file(self, split: str) -> Path | None:
        for suffix in (".json", ".jsonl"):
            path = Path(self.root) / f"{split}{suffix}"
            if path.is_file():
                return path
        return None

    def _describe(self, split: str) -> str:
        path = self._file(split) if self.is_local else None
        return str(path) if path else f"{self.root}:{split}"

    def _read_local(self, split: str) -> list[dict]:
        root = Path(self.root)
        if not root.is_dir():
            raise UserError(f"{root}: data folder not found")
        path = self._file(split)
        if path is not None:
            return read_rows(path)
        if split == "full":
            return self._read_local("retain90") + self._read_local("forget10")
        if split.endswith("_perturbed") and split.startswith("forget"):
            return self._read_local(split.removesuffix("_perturbed"))
        if split in ("real_authors", "world_facts"):
            return self._read_local(f"{split}_perturbed")
        available = sorted(p.stem for p in root.iterdir() if p.suffix in (".json", ".jsonl"))
        raise UserError(f"{root}: no split {split!r} (found: {', '.join(available) or 'no .json/.jsonl files'})")

    def _read_hub(self, split: str) -> list[dict]:
        from datasets import load_dataset

        try:
            return [dict(row) for row in load_dataset(HUB_ID, split, split="train")]
        except Exception as err:  # datasets raises many types for offline/unknown configs
            raise UserError(f"{HUB_ID}: cannot load split {split!r} ({str(err).splitlines()[0]})") from None


def read_rows(path: Path) -> list[dict]:
    text = path.read_text()
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: malformed JSON line ({err.msg})") from None
    else:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: malformed JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(rows, list):
            raise UserError(f"{path}: expected a JSON array of items, got {type(rows).__name__}")
    return rows


def _strings(row: dict):
    for key, value in row.items():
        if isinstance(value, str):
            yield key, value
        elif isinstance(value, list):
            yield from ((key, v) for v in value if isinstance(v, str))


def validate_rows(rows: list, fields: tuple[str, ...], where: str) -> None:
    """Every item has the split's fields; a plain split may hold text items (`{"text": ...}`) instead of QA."""
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UserError(f"{where}: item {index} is {type(row).__name__}, expected an object")
        if fields == QA_FIELDS and "question" not in row and "text" in row:
            if not isinstance(row["text"], str) or not row["text"].strip():
                raise UserError(f"{where}: item {index} field 'text' must be a non-empty string")
            continue
        for name in fields:
            if name not in row:
                raise UserError(f"{where}: item {index} has no field {name!r}")
            value = row[name]
            if name == "perturbed_answer":
                if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                    raise UserError(f"{where}: item {index} field {name!r} must be a non-empty list of strings")
            elif not isinstance(value, str) or not value.strip():
                raise UserError(f"{where}: item {index} field {name!r} must be a non-empty string")
