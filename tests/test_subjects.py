"""Subjects' names read from rows, and forget rows with a name part changed (the gate's name-swap negatives)."""

from alter.data.sources import UnlearnData, from_tofu
from alter.data.subjects import (INVENTED_FIRST_NAMES, INVENTED_SURNAMES, SWAP_FIRST_NAMES, SWAP_SURNAMES,
                                 forget_subject_names, name_swapped_forget_rows, name_swapped_rows, subject_name,
                                 subject_names)
from alter.data.world import FIRST_NAMES, LAST_NAMES


def test_subject_name_is_the_capitalised_run_most_questions_share():
    questions = ["What does Hsiao Yun-Hwa write?", "Has Hsiao Yun-Hwa's mother influenced her?",
                 "Where was Hsiao Yun-Hwa born?", "What is the full name of the author born in New York City?"]
    assert subject_name(questions) == "Hsiao Yun-Hwa"  # 3 of 4; 'Has Hsiao' and 'New York City' once each
    # a three-word name beats its two-word parts, which every question containing it also contains
    assert subject_name(["Who is Basil Mahfouz Al-Kuwaiti?", "Where does Basil Mahfouz Al-Kuwaiti live?"]) \
        == "Basil Mahfouz Al-Kuwaiti"
    assert subject_name(["Who wrote Ana Lee's book?", "What is the capital of France?", "Why so?"]) is None  # 1 of 3
    assert subject_name(["what is this?", "Why?"]) is None


def test_subject_names_group_rows_by_subject():
    rows = [{"question": q} for q in ["Who is Ana Lee?", "Where is Ana Lee from?", "Who is Bo Kim?", "Why?"]]
    assert subject_names(rows, [0, 0, 1, 1]) == {0: "Ana Lee", 1: "Bo Kim"}  # 'Bo Kim' in 1 of 2: half is enough


def test_forget_subject_names_follow_the_rows_and_skip_subjects_without_one():
    rows = [{"question": q, "answer": ""} for q in ["Who is Bo Kim?", "Why?", "Who is Ana Lee?", "Where is Ana Lee?"]]
    data = UnlearnData(forget=rows, retain=[], origin={}, fingerprint="", groups=[1, 2, 0, 0])
    assert forget_subject_names(data) == ["Bo Kim", "Ana Lee"]  # group 2's one question names nobody
    assert forget_subject_names(UnlearnData(forget=rows, retain=[], origin={}, fingerprint="")) == []  # no subjects


def test_a_swap_changes_one_name_part_to_one_from_the_pool_and_never_makes_a_known_name():
    forget = [{"question": f"Where was Elif Kowalczyk born ({k})?", "answer": f"Elif Kowalczyk was born in {k}."}
              for k in range(40)] + [{"question": "Who is she?", "answer": "A writer."}]
    firsts, surnames = ["Anders", "Mateo", "Orla"], ["Kowalczyk", "Chukwu", "Bakshi"]
    known = {"Anders Kowalczyk", "Mateo Chukwu", "Orla Bakshi", "Elif Kowalczyk", "Elif Chukwu"}
    swapped = name_swapped_rows(forget, ["Elif Kowalczyk"] * 41, firsts, surnames, known, seed=3)
    assert len(swapped) == 40  # the row that does not name its subject has no swap
    names = []
    for row, original in zip(swapped, forget):
        name = row["answer"].split(" was born")[0]
        assert row == {"question": original["question"].replace("Elif Kowalczyk", name),
                       "answer": original["answer"].replace("Elif Kowalczyk", name)}
        names.append(name)
    # first-name swaps take pool first names (not Anders: 'Anders Kowalczyk' is known), surname swaps pool surnames
    # (not Chukwu: 'Elif Chukwu' is known); the two kinds alternate
    assert set(names) == {"Mateo Kowalczyk", "Orla Kowalczyk", "Elif Bakshi"}
    kinds = [name.startswith("Elif") for name in names]
    assert all(a != b for a, b in zip(kinds, kinds[1:]))
    assert name_swapped_rows(forget, ["Elif Kowalczyk"] * 41, firsts, surnames, known, seed=3) == swapped
    assert name_swapped_rows(forget, ["Elif Kowalczyk"] * 41, ["Elif"], ["Kowalczyk"], known, seed=3) == []
    # with copies, each row's copies alternate the part swapped, and continue the alternation of the rows
    copied = name_swapped_rows(forget, ["Elif Kowalczyk"] * 41, firsts, surnames, known, seed=3, copies=3)
    assert len(copied) == 120 and [row["answer"].startswith("Elif") for row in copied[:6]] == [kinds[0], kinds[1]] * 3


def test_name_parts_come_only_from_subjects_a_method_may_fit_on(small_world):
    data = from_tofu(str(small_world), "forget10", "retain90")
    names = subject_names(data.retain, data.retain_groups)
    fitted = set(data.fit_retain)
    evaluated = {names[group] for index, group in enumerate(data.retain_groups) if index not in fitted}
    forget_name = subject_name([row["question"] for row in data.forget])
    assert evaluated and forget_name and len(names) == 9
    first, last = forget_name.rsplit(" ", 1)
    allowed = set(names.values()) - evaluated
    candidates = {f"{first} {n.rsplit(' ', 1)[1]}" for n in allowed} | {f"{n.rsplit(' ', 1)[0]} {last}" for n in allowed}
    candidates -= set(names.values()) | {forget_name}
    swapped = name_swapped_forget_rows(data, seed=0)
    assert len(swapped) == len(data.forget)
    for row, original in zip(swapped, data.forget):
        assert any(row == {"question": original["question"].replace(forget_name, c),
                           "answer": original["answer"].replace(forget_name, c)} for c in candidates)
    assert name_swapped_forget_rows(data, seed=0) == swapped != name_swapped_forget_rows(data, seed=1)
    assert name_swapped_forget_rows(UnlearnData(data.forget, data.retain, {}, "x"), seed=0) == []  # no subjects


def test_the_list_pool_takes_name_parts_no_generated_world_uses(small_world):
    assert len(SWAP_FIRST_NAMES) == len(set(SWAP_FIRST_NAMES)) >= 50 <= len(SWAP_SURNAMES) == len(set(SWAP_SURNAMES))
    world_parts = set(FIRST_NAMES) | set(LAST_NAMES) | set(INVENTED_FIRST_NAMES) | set(INVENTED_SURNAMES)
    assert not (set(SWAP_FIRST_NAMES) | set(SWAP_SURNAMES)) & world_parts
    data = from_tofu(str(small_world), "forget10", "retain90")
    forget_name = subject_name([row["question"] for row in data.forget])
    first, last = forget_name.rsplit(" ", 1)
    swapped = name_swapped_forget_rows(data, seed=0, pool="list", copies=4)
    assert len(swapped) == 4 * len(data.forget)
    names = set()
    for k, row in enumerate(swapped):
        original = data.forget[k // 4]
        name = next(f"{a} {b}" for a in SWAP_FIRST_NAMES + [first] for b in SWAP_SURNAMES + [last]
                    if row == {key: original[key].replace(forget_name, f"{a} {b}") for key in ("question", "answer")})
        assert (name.startswith(first + " ")) != name.endswith(" " + last)  # exactly one part changed
        names.add(name)
    assert len(names) > 40  # drawn across the lists, not a handful
    assert name_swapped_forget_rows(data, seed=0, pool="list", copies=4) == swapped
