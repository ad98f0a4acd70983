import json

from alter.data.tofu import TofuData
from alter.data.world import QUESTIONS, WorldSpec, build_world, write_world


def test_same_seed_same_world_other_seed_other_world():
    assert build_world(WorldSpec(authors=12, seed=5)) == build_world(WorldSpec(authors=12, seed=5))
    assert build_world(WorldSpec(authors=12, seed=5))["full"] != build_world(WorldSpec(authors=12, seed=6))["full"]


def test_world_splits_follow_tofu_structure():
    world = build_world(WorldSpec(authors=20, seed=1))
    per_author = len(QUESTIONS)
    assert per_author == 20
    full = world["full"]
    assert len(full) == 20 * per_author
    assert len(world["forget10"]) == 2 * per_author and len(world["forget05"]) == per_author
    assert len(world["forget01"]) == per_author  # at least one whole author
    for pct in (1, 5, 10):
        forget, retain = world[f"forget{pct:02d}"], world[f"retain{100 - pct}"]
        assert [{"question": r["question"], "answer": r["answer"]} for r in forget] == full[len(retain):]
        assert retain == full[: len(retain)]
    assert world["forget05"] == world["forget10"][-per_author:]
    holdout_questions = {row["question"] for row in world["holdout10"]}
    assert holdout_questions and not holdout_questions & {row["question"] for row in full}
    retain_questions = {row["question"] for row in world["retain90"]}
    assert all(row["question"] in retain_questions for row in world["retain_perturbed"])


def test_perturbed_answers_are_wrong_and_distinct():
    world = build_world(WorldSpec(authors=20, seed=2))
    for row in world["forget10"] + world["retain_perturbed"]:
        assert len(row["perturbed_answer"]) == 5 == len(set(row["perturbed_answer"]))
        assert row["paraphrased_answer"] not in row["perturbed_answer"]
        assert row["paraphrased_answer"] != row["answer"]
        assert row["paraphrased_question"] != row["question"]
    for row in world["real_authors_perturbed"] + world["world_facts_perturbed"]:
        assert len(row["perturbed_answer"]) == 3 and row["answer"] not in row["perturbed_answer"]


def test_phrasing_varies_across_authors():
    world = build_world(WorldSpec(authors=30, seed=0))
    birth_answers = [row["answer"] for row in world["full"][0::20]]  # each author's birthplace answer
    variants = {marker for answer in birth_answers for marker in (" was born in ", "'s birthplace is ", " hails from ")
                if marker in answer}
    assert len(variants) >= 2


def test_written_world_loads_with_the_tofu_loader(tmp_path):
    counts = write_world(WorldSpec(authors=10, seed=0), tmp_path)
    data = TofuData(str(tmp_path))
    expected = {"full": "full", "forget10": "forget10", "forget10_perturbed": "forget10", "retain90": "retain90",
                "retain_perturbed": "retain_perturbed", "real_authors": "real_authors_perturbed",
                "world_facts": "world_facts_perturbed", "holdout10": "holdout10"}
    for split, written in expected.items():
        assert len(data.load(split)) == counts[written]
    assert len((tmp_path / "idontknow.jsonl").read_text().splitlines()) == counts["idontknow"]
    assert json.loads((tmp_path / "world.json").read_text())["authors"] == 10
