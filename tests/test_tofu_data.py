import json

import pytest

from alter.data.tofu import TofuData
from alter.errors import UserError

# Row counts from ../shared/data/README.md
EXPECTED_ROWS = {
    "forget01": 40, "forget05": 200, "forget10": 400, "retain99": 3960, "retain95": 3800, "retain90": 3600,
    "retain_perturbed": 400, "real_authors_perturbed": 100, "world_facts_perturbed": 117, "full": 4000,
}


@pytest.mark.parametrize("split,rows", sorted(EXPECTED_ROWS.items()))
def test_shared_tofu_counts(tofu_dir, split, rows):
    assert len(TofuData(str(tofu_dir)).load(split)) == rows


def test_shared_tofu_fields_and_structure(tofu_dir):
    data = TofuData(str(tofu_dir))
    forget10 = data.load("forget10")
    assert all(len(row["perturbed_answer"]) == 5 for row in forget10)
    assert all({"paraphrased_question", "subject", "perturbed_subject"} <= row.keys() for row in forget10)
    pairs = [(row["question"], row["answer"]) for row in forget10]
    # the files share questions and answers; their perturbed answers were drawn separately
    assert [(row["question"], row["answer"]) for row in data.load("forget05")] == pairs[-200:]
    assert [(row["question"], row["answer"]) for row in data.load("forget01")] == pairs[-40:]
    assert data.load("forget10_perturbed") == forget10
    retain90 = data.load("retain90")
    assert data.load("full") == retain90 + forget10
    questions = {row["question"] for row in retain90}
    assert all(row["question"] in questions for row in data.load("retain_perturbed"))
    assert all(len(row["perturbed_answer"]) == 3 for row in data.load("world_facts"))


def test_missing_split_names_the_folder(tofu_dir):
    with pytest.raises(UserError, match=r"no split 'holdout10'"):
        TofuData(str(tofu_dir)).load("holdout10")


def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="data folder not found"):
        TofuData(str(tmp_path / "nope")).load("forget10")


def test_malformed_json_names_the_file(tmp_path):
    (tmp_path / "forget10.json").write_text('[{"question": "q", ')
    with pytest.raises(UserError, match=r"forget10\.json: malformed JSON"):
        TofuData(str(tmp_path)).load("forget10")


def test_malformed_jsonl_names_the_line(tmp_path):
    (tmp_path / "world_facts_perturbed.jsonl").write_text('{"question": "q", "answer": "a", "perturbed_answer": ["b"]}\n{oops\n')
    with pytest.raises(UserError, match=r"world_facts_perturbed\.jsonl:2: malformed JSON line"):
        TofuData(str(tmp_path)).load("world_facts")


def test_missing_field_names_item_and_field(tmp_path):
    rows = [{"question": "q", "answer": "a", "paraphrased_answer": "p", "perturbed_answer": ["x"]},
            {"question": "q2", "answer": "a2", "perturbed_answer": ["x"]}]
    (tmp_path / "forget10.json").write_text(json.dumps(rows))
    with pytest.raises(UserError, match=r"item 1 has no field 'paraphrased_answer'"):
        TofuData(str(tmp_path)).load("forget10")


def test_mistyped_field(tmp_path):
    (tmp_path / "retain90.json").write_text(json.dumps([{"question": "q", "answer": 7}]))
    with pytest.raises(UserError, match=r"item 0 field 'answer' must be a non-empty string"):
        TofuData(str(tmp_path)).load("retain90")


def test_empty_split(tmp_path):
    (tmp_path / "forget10.json").write_text("[]")
    with pytest.raises(UserError, match="is empty"):
        TofuData(str(tmp_path)).load("forget10")
