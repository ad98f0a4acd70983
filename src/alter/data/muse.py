"""MUSE data (Shi et al., 2024): the hub datasets `muse-bench/MUSE-News` and `muse-bench/MUSE-Books`, or a local
folder in the layout of ../shared/data/muse-news (`<subset>/<split>.json`). Subsets: raw (corpora), verbmem (prompt,
gt), knowmem (question, answer; `*_icl` in-context examples), privleak (texts). Every item is validated on load."""

from __future__ import annotations

import json
from pathlib import Path

from alter.errors import UserError

HUB_IDS = ("muse-bench/MUSE-News", "muse-bench/MUSE-Books")
FIELDS = {"verbmem": ("prompt", "gt"), "knowmem": ("question", "answer")}
HUB_SPLITS = {"retain2_qa": "retain_qa", "retain2_qa_icl": "retain_qa_icl", "retain2": "retain"}  # local -> hub


class MuseData:
    def __init__(self, root: str):
        self.root = root

    @property
    def is_local(self) -> bool:
        return self.root not in HUB_IDS

    def has(self, subset: str, split: str) -> bool:
        return (Path(self.root) / subset / f"{split}.json").is_file() if self.is_local else True

    def load(self, subset: str, split: str) -> list:
        rows = self._read_local(subset, split) if self.is_local else self._read_hub(subset, split)
        where = f"{self.root}/{subset}/{split}"
        if not rows:
            raise UserError(f"{where}: no items")
        if subset in FIELDS:
            for index, row in enumerate(rows):
                for name in FIELDS[subset]:
                    if not isinstance(row, dict) or not isinstance(row.get(name), str) or not row[name].strip():
                        raise UserError(f"{where}: item {index} needs a non-empty text field {name!r}")
        else:
            rows = [row["text"] if isinstance(row, dict) and "text" in row else row for row in rows]
            for index, text in enumerate(rows):  # MUSE-News's raw corpus has an empty article: allowed
                if not isinstance(text, str):
                    raise UserError(f"{where}: item {index} is {type(text).__name__}, expected text (a corpus is a "
                                    "JSON array of strings)")
        return rows

    def _read_local(self, subset: str, split: str) -> list:
        root = Path(self.root)
        if not root.is_dir():
            raise UserError(f"{root}: MUSE data folder not found")
        path = root / subset / f"{split}.json"
        if not path.is_file():
            raise UserError(f"{root}: missing MUSE subset {subset}/{split}.json")
        try:
            rows = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: malformed JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(rows, list):
            raise UserError(f"{path}: expected a JSON array, got {type(rows).__name__}")
        return rows

    def _read_hub(self, subset: str, split: str) -> list:
        from datasets import load_dataset

        try:
            return [dict(row) for row in load_dataset(self.root, subset, split=HUB_SPLITS.get(split, split))]
        except Exception as err:  # datasets raises many types for offline/unknown configs
            raise UserError(f"{self.root}: cannot load {subset}/{split} ({str(err).splitlines()[0]})") from None
