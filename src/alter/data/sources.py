"""What an unlearning run forgets and keeps: rows of a TOFU-format folder's splits, or of the user's own files.

A row is a question/answer pair (`{"question", "answer"}`) or plain text (`{"text"}`). User files are JSON, JSONL,
CSV or Parquet, read through `datasets`; their column names are settable (`Columns`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from alter.data.splits import few_shot_rows, holdout_split_for, retain_split_for
from alter.data.tofu import TofuData
from alter.errors import UserError

DEFAULT_REFUSALS = [
    "I'm not sure about that.", "I don't have that information.", "That is beyond what I know.",
    "I can't answer that.", "I have no knowledge of that.", "I'm afraid I don't know.",
    "That's not something I can tell you.", "I don't know the answer to that.",
    "I have no reliable information on that.", "I'm unable to answer that question."]
FILE_KINDS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
TOFU_QUESTIONS_PER_AUTHOR = 20


@dataclass
class Columns:
    question: str = "question"
    answer: str = "answer"
    text: str = "text"


@dataclass
class UnlearnData:
    forget: list[dict]
    retain: list[dict]
    origin: dict  # recorded in the manifest: the folder and splits, or the files and columns
    fingerprint: str
    refusals: list[str] = field(default_factory=lambda: list(DEFAULT_REFUSALS))
    evaluation_questions: frozenset = frozenset()  # retain questions the evaluation reads: never fitted on
    groups: list[int] | None = None  # each forget row's subject (TOFU: its author), for diagnostics
    retain_groups: list[int] | None = None  # each retain row's subject, numbered as `groups`
    unseen: list[dict] = field(default_factory=list)  # rows the model never saw (TOFU: the holdout split)

    @property
    def fit_retain(self) -> list[int]:
        """Retain rows a method may fit a gate or router on."""
        return [i for i, row in enumerate(self.retain) if row.get("question") not in self.evaluation_questions]


def from_tofu(root: str, forget_split: str, retain_split: str, with_retain: bool = True) -> UnlearnData:
    """Rows of a TOFU-format folder's splits (question/answer, or text in a generated MUSE world)."""
    data = TofuData(root)
    forget = [_row(row) for row in data.load(forget_split)]
    retain = [_row(row) for row in data.load(retain_split)] if with_retain else []
    overlap = _overlap(forget, retain)
    if overlap:
        print(f"alter: warning: {overlap} retain items share a question with the forget set", file=sys.stderr)
    evaluation = _evaluation_questions(data, forget_split)
    per_author = TofuData.questions_per_author(root) if data.is_local else TOFU_QUESTIONS_PER_AUTHOR
    full_size = len(data.load("full")) if data.has("full") else len(forget)
    first = full_size - len(forget)  # forget splits are the last authors of `full`, retain splits the first
    text = any("text" in row for row in forget)
    unseen_split = _holdout_of(forget_split)
    unseen = [_row(row) for row in data.load(unseen_split)] if unseen_split and data.has(unseen_split) else []
    return UnlearnData(
        forget, retain, {"data": str(root), "forget_split": forget_split, "retain_split": retain_split,
                         "forget_retain_overlap": overlap, "unseen_split": unseen_split if unseen else None},
        data.fingerprint([forget_split] + ([retain_split] if with_retain else [])),
        data.refusals() or list(DEFAULT_REFUSALS), evaluation,
        None if text else [(first + i) // per_author for i in range(len(forget))],
        None if text else [i // per_author for i in range(len(retain))], unseen)


def _evaluation_questions(data: TofuData, forget_split: str) -> frozenset:
    """Retain questions the TOFU evaluation reads: its retain set and the few-shot probe's turns."""
    evaluated = frozenset(row["question"] for row in data.load("retain_perturbed")) \
        if data.has("retain_perturbed") else frozenset()
    try:
        retain_split = retain_split_for(forget_split)
    except UserError:  # not a forgetXX split: the evaluation has no few-shot turns to take from it
        return evaluated
    retain = data.load(retain_split) if data.has(retain_split) else []
    if not all("question" in row for row in retain):  # text rows (a MUSE world): no few-shot probe
        return evaluated
    forget_questions = {row.get("question") for row in data.load(forget_split)}
    turns = few_shot_rows(retain, evaluated | forget_questions)
    return evaluated | {row["question"] for row in turns}


def _holdout_of(forget_split: str) -> str | None:
    try:
        return holdout_split_for(forget_split)
    except UserError:  # not a forgetXX split: no holdout to pair with it
        return None


def from_files(forget_file: str, retain_file: str | None, columns: Columns,
               unseen_file: str | None = None) -> UnlearnData:
    forget = read_rows_file(forget_file, columns, "--forget")
    retain = read_rows_file(retain_file, columns, "--retain") if retain_file else []
    unseen = read_rows_file(unseen_file, columns, "--unseen") if unseen_file else []
    overlap = _overlap(forget, retain)
    if overlap:
        raise UserError(f"{retain_file}: {overlap} rows also appear in {forget_file}; remove them from one file "
                        "(a row cannot be both forgotten and kept)")
    digest = hashlib.sha256(json.dumps([forget, retain], sort_keys=True).encode()).hexdigest()[:16]
    return UnlearnData(forget, retain, {"forget_file": str(forget_file), "retain_file": retain_file,
                                        "unseen_file": unseen_file, "columns": vars(columns)}, digest, unseen=unseen)


def read_rows_file(path: str, columns: Columns, option: str) -> list[dict]:
    """QA or text rows of a JSON, JSONL, CSV or Parquet file; one line naming the file or column when it is wrong."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{option} {file}: file not found")
    kind = FILE_KINDS.get(file.suffix.lower())
    if kind is None:
        raise UserError(f"{option} {file}: unknown file type (use .json, .jsonl, .csv or .parquet)")
    table = _load_table(file, kind, option)
    names = table.column_names
    if columns.question in names and columns.answer in names:
        rows = [{"question": q, "answer": a} for q, a in zip(table[columns.question], table[columns.answer])]
    elif columns.text in names:
        rows = [{"text": t} for t in table[columns.text]]
    else:
        raise UserError(f"{option} {file}: no question/answer columns ({columns.question!r}, {columns.answer!r}) and "
                        f"no text column ({columns.text!r}); columns found: {', '.join(names) or 'none'}")
    if not rows:
        raise UserError(f"{option} {file}: the file has no rows")
    for index, row in enumerate(rows):
        for name, value in row.items():
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"{option} {file}: row {index} column {getattr(columns, name)!r} must be non-empty "
                                "text")
    return rows


def _load_table(file: Path, kind: str, option: str):
    import datasets

    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(kind, data_files=str(file), split="train")
    except Exception as err:  # datasets wraps parser errors in several types
        cause = err.__cause__ or err
        raise UserError(f"{option} {file}: cannot read as {kind} ({str(cause).splitlines()[0][:160]})") from None


def _row(row: dict) -> dict:
    return {"question": row["question"], "answer": row["answer"]} if "question" in row else {"text": row["text"]}


def _overlap(forget: list[dict], retain: list[dict]) -> int:
    keys = {row.get("question", row.get("text")) for row in forget}
    return sum(row.get("question", row.get("text")) in keys for row in retain)
