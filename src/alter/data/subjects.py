"""Subjects' names in question/answer rows; forget rows with one part of their subject's name changed, or with the
whole name replaced by an invented one.

A gate that keys on a name part fires on every other subject who shares it: on one generated world it fired on all
20 answers of a retain author who shares a surname with a forget author (docs/method.md, "Shared name parts").
Forget rows with another first name or another surname, as negatives, are meant to teach it the whole name; on
worlds 5 and 0 they did not (docs/method.md, "Name swaps": a gate-only check, its commands there).

TOFU-format data has no name field, so a subject's name is read from its rows: the run of two to four capitalised
words that the most of its questions contain (TOFU and generated worlds name the author in nearly every question).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

_CAPITALISED = re.compile(r"[A-Z][\w-]*")
_MAX_NAME_WORDS = 4


def subject_name(questions: list[str]) -> str | None:
    """The run of 2-4 capitalised words found in the most of `questions` (each counted once per question, ties to the
    longer run, then the first seen), if at least half of them contain it; else None."""
    counts: Counter = Counter()
    for question in questions:
        counts.update(set(_capitalised_runs(question)))
    if not counts:
        return None
    name, count = max(counts.items(), key=lambda item: (item[1], len(item[0].split())))
    return name if count * 2 >= len(questions) else None


def _capitalised_runs(text: str) -> list[str]:
    """Every run of 2-4 consecutive capitalised words, possessive 's and punctuation removed from each word."""
    words = [re.sub(r"('s|')$", "", word.strip(".,;:!?()\"")) for word in text.split()]
    runs, current = [], []
    for word in words + [""]:
        if _CAPITALISED.fullmatch(word):
            current.append(word)
            continue
        for start in range(len(current)):
            for length in range(2, _MAX_NAME_WORDS + 1):
                if start + length <= len(current):
                    runs.append(" ".join(current[start : start + length]))
        current = []
    return runs


def subject_names(rows: list[dict], groups: list[int]) -> dict[int, str]:
    """Each group's subject name, for the groups whose name `subject_name` finds."""
    questions: dict[int, list[str]] = {}
    for row, group in zip(rows, groups):
        questions.setdefault(group, []).append(row["question"])
    names = {group: subject_name(texts) for group, texts in questions.items()}
    return {group: name for group, name in names.items() if name}


def name_swapped_forget_rows(data, seed: int) -> list[dict]:
    """`name_swapped_rows` of an `UnlearnData`'s forget rows, with name parts from the subjects a method may fit on
    (the forget subjects and the retain subjects none of whose rows the evaluation reads); never the whole name of any
    subject in the data. Empty without subjects (rows of the user's own files)."""
    if data.groups is None or data.retain_groups is None:
        return []
    forget_names = subject_names(data.forget, data.groups)
    retain_names = subject_names(data.retain, data.retain_groups)
    allowed = set(data.fit_retain)
    evaluated = {group for index, group in enumerate(data.retain_groups) if index not in allowed}
    pool = set(forget_names.values()) | {name for group, name in retain_names.items() if group not in evaluated}
    return name_swapped_rows(data.forget, [forget_names.get(group) for group in data.groups], sorted(pool),
                             set(forget_names.values()) | set(retain_names.values()), seed)


def name_swapped_rows(forget: list[dict], names: list[str | None], pool: list[str], known: set[str],
                      seed: int) -> list[dict]:
    """Per forget row that names its subject, one copy with the first name(s) or the surname (alternating from a
    seeded start) replaced by that part of a name from `pool`, drawn with a seeded generator; never a name in `known`."""
    rng = np.random.default_rng(seed)
    start = int(rng.integers(2))
    swapped = []
    for index, (row, name) in enumerate(zip(forget, names)):
        if not name or name not in row["question"] + row["answer"]:
            continue
        replacement = _swap(name, pool, known, (index + start) % 2 == 1, rng)
        if replacement:
            swapped.append({"question": row["question"].replace(name, replacement),
                            "answer": row["answer"].replace(name, replacement)})
    return swapped


def _swap(name: str, pool: list[str], known: set[str], surname: bool, rng: np.random.Generator) -> str | None:
    first, last = name.rsplit(" ", 1)
    options = sorted({f"{first} {other.rsplit(' ', 1)[1]}" if surname else f"{other.rsplit(' ', 1)[0]} {last}"
                      for other in pool} - known)
    return options[rng.integers(len(options))] if options else None


# Names no generated world uses (data/world.py); `renamed_forget_rows` also skips any part that some row contains.
INVENTED_FIRST_NAMES = ("Ysolde", "Corwin", "Thessaly", "Anselm", "Linnea", "Oisin", "Perpetua", "Tobiah", "Rosamund",
                        "Caspian", "Isolde", "Lucan", "Marisol", "Evander", "Philippa", "Thaddeus")
INVENTED_SURNAMES = ("Brannigan", "Ashcombe", "Villeneuve", "Thornquist", "Penhallow", "Drummond", "Valcourt",
                     "Esterhazy", "Kestrel", "Hollins", "Mabry", "Quennell", "Ridgeway", "Sallow", "Trevithick",
                     "Lindgren")


def renamed_forget_rows(data, seed: int) -> list[dict | None]:
    """Per forget row of an `UnlearnData`, the row with its subject's name replaced, in question and answer, by an
    invented name (one per subject, drawn with a seeded generator from names no row contains): the same question
    about a subject the model never saw. None where no subject name is found in the row (or without subjects)."""
    if data.groups is None:
        return [None] * len(data.forget)
    names = subject_names(data.forget, data.groups)
    words = {word for row in data.forget + data.retain for text in row.values() if isinstance(text, str)
             for word in _CAPITALISED.findall(text)}
    firsts = [name for name in INVENTED_FIRST_NAMES if name not in words]
    lasts = [name for name in INVENTED_SURNAMES if name not in words]
    rng = np.random.default_rng(seed)
    pairs = [(first, last) for first in firsts for last in lasts]
    chosen = rng.permutation(len(pairs))
    invented = {group: " ".join(pairs[chosen[k % len(pairs)]]) for k, group in enumerate(sorted(names))} if pairs else {}
    renamed = []
    for row, group in zip(data.forget, data.groups):
        name = names.get(group)
        if not name or group not in invented or name not in row["question"] + row["answer"]:
            renamed.append(None)
            continue
        renamed.append({"question": row["question"].replace(name, invented[group]),
                        "answer": row["answer"].replace(name, invented[group])})
    return renamed
