"""Subjects' names in question/answer rows; forget rows with one part of their subject's name changed, or with the
whole name replaced by an invented one.

A gate that keys on a name part fires on every other subject who shares it: on one generated world it fired on all
20 answers of a retain author who shares a surname with a forget author (docs/method.md, "Shared name parts").
Forget rows with another first name or another surname, as negatives, are meant to teach it the whole name; on
worlds 5 and 0 they did not (docs/method.md, "Name swaps": a gate-only check, its commands there). Name parts drawn
from a list that no generated world uses kept the namesakes of worlds 17 and 19 off, and on world 25 cost the gate
half its forget answers (docs/method.md, "Name swaps from a list of common name parts").

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


def forget_subject_names(data) -> list[str]:
    """The names of the forget subjects that the rows name (in order of first appearance); empty without subjects."""
    if data.groups is None:
        return []
    names = subject_names(data.forget, data.groups)
    return list(dict.fromkeys(names[group] for group in data.groups if group in names))


def name_swapped_forget_rows(data, seed: int, pool: str = "subjects", copies: int = 1) -> list[dict]:
    """`name_swapped_rows` of an `UnlearnData`'s forget rows, `copies` per row; never the whole name of any subject in
    the data. Name parts from `pool`: "subjects", the subjects a method may fit on (the forget subjects and the retain
    subjects none of whose rows the evaluation reads); "list", `SWAP_FIRST_NAMES` and `SWAP_SURNAMES`, which no
    generated world uses, so an evaluated namesake is never among them. Empty without subjects (rows of the user's
    own files)."""
    if data.groups is None or data.retain_groups is None:
        return []
    forget_names = subject_names(data.forget, data.groups)
    retain_names = subject_names(data.retain, data.retain_groups)
    if pool == "list":
        firsts, surnames = list(SWAP_FIRST_NAMES), list(SWAP_SURNAMES)
    else:
        allowed = set(data.fit_retain)
        evaluated = {group for index, group in enumerate(data.retain_groups) if index not in allowed}
        names = sorted(set(forget_names.values()) | {name for group, name in retain_names.items()
                                                      if group not in evaluated})
        firsts, surnames = [name.rsplit(" ", 1)[0] for name in names], [name.rsplit(" ", 1)[1] for name in names]
    return name_swapped_rows(data.forget, [forget_names.get(group) for group in data.groups], firsts, surnames,
                             set(forget_names.values()) | set(retain_names.values()), seed, copies)


def name_swapped_rows(forget: list[dict], names: list[str | None], firsts: list[str], surnames: list[str],
                      known: set[str], seed: int, copies: int = 1) -> list[dict]:
    """Per forget row that names its subject, `copies` copies, each with the first name(s) or the surname (alternating
    from a seeded start) replaced by one of `firsts` or `surnames`, drawn with a seeded generator; never a name in
    `known`."""
    rng = np.random.default_rng(seed)
    start = int(rng.integers(2))
    swapped = []
    for index, (row, name) in enumerate(zip(forget, names)):
        if not name or name not in row["question"] + row["answer"]:
            continue
        for copy in range(copies):
            replacement = _swap(name, firsts, surnames, known, (index + copy + start) % 2 == 1, rng)
            if replacement:
                swapped.append({"question": row["question"].replace(name, replacement),
                                "answer": row["answer"].replace(name, replacement)})
    return swapped


def _swap(name: str, firsts: list[str], surnames: list[str], known: set[str], surname: bool,
          rng: np.random.Generator) -> str | None:
    first, last = name.rsplit(" ", 1)
    options = sorted({f"{first} {other}" for other in surnames} if surname else {f"{other} {last}" for other in firsts})
    options = [option for option in options if option not in known]
    return options[rng.integers(len(options))] if options else None


# Common name parts of many languages for the "list" pool of name swaps; no generated world (data/world.py) and no
# renamed row (below) uses them (tested).
SWAP_FIRST_NAMES = """Adebayo Ahmed Aiko Akira Alejandro Ana Anika Anja Arjun Astrid Bao Bilal Camille Carlos Chen Chidi
Dagny Diego Dong Elena Emil Esra Fatima Gabriel Giulia Hamid Helga Ines Ivan Jakob Jia Kamal Karin Kenji Kwame Lars Layla
Luca Malik Maria Mikhail Minh Nia Olga Omar Paolo Rahul Ravi Rosa Sakura Samir Sergei Siobhan Sofia Sven Tariq Tomas Vera
Yuki Zainab""".split()
SWAP_SURNAMES = """Adeyemi Ahmadi Alvarez Andersson Barros Bianchi Brennan Cohen Costa Duarte Dubois Eze Ferreira Fischer
Garcia Gupta Hansen Hoffmann Horvath Ivanova Jensen Kaur Kim Kimura Kovacs Larsen Lee Lopez Marsh Mensah Muller Nguyen
Nielsen Obi Ortiz Park Patel Petrov Popescu Reyes Romano Rossi Santos Sato Schmidt Silva Singh Sokolov Suzuki Tanaka
Torres Varga Wagner Wang Weber Yamamoto Zhang""".split()


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
