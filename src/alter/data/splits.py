"""TOFU split names: `forgetXX` determines its retain (`retain{100-XX}`) and holdout (`holdoutXX`) splits; and the
retain rows the evaluation's few-shot probe puts before a question, which nothing a method fits may read."""

from __future__ import annotations

import re

from alter.errors import UserError


def forget_percent(forget_split: str, option: str = "--forget-split") -> str:
    match = re.fullmatch(r"forget(\d+)", forget_split)
    if not match:
        raise UserError(f"{option}: expected forgetXX (e.g. forget10), got {forget_split!r}")
    return match.group(1)


def retain_split_for(forget_split: str) -> str:
    return f"retain{100 - int(forget_percent(forget_split))}"


def holdout_split_for(forget_split: str) -> str:
    return f"holdout{forget_percent(forget_split)}"


FEW_SHOT_TURNS = 3


def few_shot_rows(retain_rows: list[dict], evaluated_questions: set | frozenset) -> list[dict]:
    """The few-shot probe's turns: the last retain rows outside every evaluated set, last row first."""
    rows = [row for row in reversed(retain_rows) if row["question"] not in evaluated_questions]
    return rows[:FEW_SHOT_TURNS]
