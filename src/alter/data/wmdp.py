"""Four-way multiple choice in WMDP's schema (question, choices, answer index): the hub's `cais/wmdp` (wmdp-bio,
wmdp-cyber, wmdp-chem) and `cais/mmlu`, MMLU's original CSV files (question, A, B, C, D, answer letter; no header),
or a local folder `DIR/hazardous/<subject>.{json,jsonl,csv}` and `DIR/general/<subject>.{...}` (`alter world wmdp`
writes one)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from alter.errors import UserError

SETS = ("hazardous", "general")
HUB = {"cais/wmdp": {"hazardous": ("wmdp-bio", "wmdp-cyber", "wmdp-chem")}, "cais/mmlu": {"general": ("all",)}}
LETTERS = "ABCDEFGHIJ"


def load_questions(root: str) -> dict[str, dict[str, list[dict]]]:
    """{set: {subject: [item]}} for a local folder, or for a hub id (`cais/wmdp`, `cais/mmlu`)."""
    if root in HUB:
        from datasets import load_dataset

        try:
            return {group: {name: [dict(r) for r in load_dataset(root, name, split="test")] for name in names}
                    for group, names in HUB[root].items()}
        except Exception as err:  # datasets raises many types offline
            raise UserError(f"{root}: cannot load ({str(err).splitlines()[0]})") from None
    folder = Path(root)
    if not folder.is_dir():
        raise UserError(f"{folder}: multiple-choice folder not found")
    found = {group: {path.stem: read_items(path) for path in sorted((folder / group).glob("*"))
                     if path.suffix in (".json", ".jsonl", ".csv")}
             for group in SETS if (folder / group).is_dir()}
    if not any(found.values()):
        raise UserError(f"{folder}: no multiple-choice files in {folder}/hazardous or {folder}/general")
    return found


def read_items(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            rows = [{"question": r[0], "choices": r[1:-1], "answer": LETTERS.index(r[-1].strip())}
                    for r in csv.reader(handle) if r and r[-1].strip() in LETTERS]
    else:
        text = path.read_text()
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" \
                else json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: malformed JSON ({err.msg})") from None
    validate_items(rows, str(path))
    return rows


def validate_items(rows, where: str) -> None:
    if not isinstance(rows, list) or not rows:
        raise UserError(f"{where}: expected a non-empty list of questions")
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise UserError(f"{where}: item {index} has no text field 'question'")
        choices = row.get("choices")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise UserError(f"{where}: item {index} field 'choices' must be a list of at least 2 strings")
        answer = row.get("answer")
        if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
            raise UserError(f"{where}: item {index} answer {answer!r} is not an index into its {len(choices)} "
                            "choices")
