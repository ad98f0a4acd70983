"""TOFU split names: `forgetXX` determines its retain (`retain{100-XX}`) and holdout (`holdoutXX`) splits."""

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
