"""Your own data: `alter unlearn --forget FILE [--retain FILE]` and `alter eval forget`, with JSON, JSONL, CSV and
Parquet files of question/answer or text rows, settable column names, and one-line errors for bad files."""

import json
import subprocess
import sys

import pytest

from alter.data.sources import Columns, from_files, read_rows_file
from alter.data.tofu import TofuData
from alter.errors import UserError


def alter(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "alter.cli.main", *map(str, args)], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alter: error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def user_files(small_world, tmp_path):
    data = TofuData(str(small_world))
    forget = [{"q": row["question"], "a": row["answer"]} for row in data.load("forget10")]
    retain = [{"q": row["question"], "a": row["answer"]} for row in data.load("retain90")[:60]]
    (tmp_path / "forget.json").write_text(json.dumps(forget))
    (tmp_path / "retain.jsonl").write_text("".join(json.dumps(row) + "\n" for row in retain))
    import pandas as pd

    pd.DataFrame(retain[:10]).to_csv(tmp_path / "holdout.csv", index=False)
    pd.DataFrame({"text": [row["a"] for row in forget]}).to_parquet(tmp_path / "texts.parquet")
    return tmp_path


def test_every_format_and_column_names_read_through_datasets(user_files):
    columns = Columns(question="q", answer="a")
    forget = read_rows_file(str(user_files / "forget.json"), columns, "--forget")
    assert forget[0] == {"question": forget[0]["question"], "answer": forget[0]["answer"]} and len(forget) == 20
    assert len(read_rows_file(str(user_files / "retain.jsonl"), columns, "--retain")) == 60
    assert len(read_rows_file(str(user_files / "holdout.csv"), columns, "--holdout")) == 10
    texts = read_rows_file(str(user_files / "texts.parquet"), columns, "--forget")
    assert set(texts[0]) == {"text"} and len(texts) == 20


def test_unlearn_from_files_then_evaluate_before_and_after(user_files, tiny_runs):
    out = user_files / "run"
    result = alter("unlearn", "--model", tiny_runs / "target", "--forget", user_files / "forget.json", "--retain",
                   user_files / "retain.jsonl", "--question-column", "q", "--answer-column", "a", "--method", "npo",
                   "--set", "train.max_steps=3", "--set", "train.learning_rate=3e-4", "--precision", "fp32",
                   "--out", out)
    assert "forget answers' probability" in result.stdout.strip().splitlines()[-1]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["forget_file"].endswith("forget.json") and manifest["forget_rows"] == 20
    alter("eval", "forget", "--model", out, "--before", tiny_runs / "target", "--forget", user_files / "forget.json",
          "--retain", user_files / "retain.jsonl", "--holdout", user_files / "holdout.csv", "--question-column", "q",
          "--answer-column", "a", "--probes", "instruction", "--max-new-tokens", "8", "--precision", "fp32",
          "--out", user_files / "eval")
    summary = json.loads((user_files / "eval" / "FORGET_SUMMARY.json").read_text())
    assert summary["forget_prob"] < summary["before_forget_prob"]
    for key in ("forget_ROUGE", "retain_prob", "forget_probe_instruction_prob", "mia_min_k", "before_mia_min_k"):
        assert summary[key] is not None, key
    log = json.loads((user_files / "eval" / "FORGET_EVAL.json").read_text())
    assert len(log["forget"]["items"]) == 20 and len(log["holdout"]["items"]) == 10


def test_plain_text_rows_unlearn_too(user_files, tiny_runs):
    alter("unlearn", "--model", tiny_runs / "target", "--forget", user_files / "texts.parquet", "--method",
          "gradascent", "--set", "train.max_steps=2", "--precision", "fp32", "--out", user_files / "text-run")
    assert json.loads((user_files / "text-run" / "manifest.json").read_text())["forget_rows"] == 20


@pytest.mark.parametrize("content,name,message", [
    ([{"title": "x", "body": "y"}], "f.json", "no question/answer columns ('question', 'answer') and no text column"),
    ([], "f.json", "--forget"),
    ("not a table", "f.txt", "unknown file type"),
])
def test_bad_forget_files_are_one_line(content, name, message, tiny_runs, tmp_path):
    path = tmp_path / name
    path.write_text(json.dumps(content) if not isinstance(content, str) else content)
    result = alter("unlearn", "--model", tiny_runs / "target", "--forget", path, "--method", "gradascent",
                   "--out", tmp_path / "out", check=False)
    assert_one_line_error(result, message)
    assert not (tmp_path / "out").exists()


def test_unseen_rows_come_from_the_holdout_split_or_a_file(user_files, small_world, tiny_runs):
    """What ALTER's forget floor reads (params.forget_floor): TOFU's holdout split beside forgetXX, or --unseen FILE."""
    from alter.data.sources import from_tofu

    data = from_tofu(str(small_world), "forget10", "retain90")
    assert data.unseen == [{"question": r["question"], "answer": r["answer"]}
                           for r in TofuData(str(small_world)).load("holdout10")]
    assert data.origin["unseen_split"] == "holdout10"
    files = from_files(str(user_files / "forget.json"), None, Columns("q", "a"), str(user_files / "holdout.csv"))
    assert len(files.unseen) == 10 and files.origin["unseen_file"].endswith("holdout.csv")
    result = alter("unlearn", "--model", tiny_runs / "target", "--data", small_world, "--unseen",
                   user_files / "holdout.csv", "--method", "alter", "--out", user_files / "o", check=False)
    assert_one_line_error(result, "--unseen FILE go with --forget FILE")
    assert not (user_files / "o").exists()


def test_overlapping_files_and_a_method_without_retain_data(user_files, tiny_runs):
    result = alter("unlearn", "--model", tiny_runs / "target", "--forget", user_files / "forget.json", "--retain",
                   user_files / "forget.json", "--question-column", "q", "--answer-column", "a", "--method", "npo",
                   "--out", user_files / "o", check=False)
    assert_one_line_error(result, "20 rows also appear in")
    result = alter("unlearn", "--model", tiny_runs / "target", "--forget", user_files / "forget.json",
                   "--question-column", "q", "--answer-column", "a", "--method", "npo", "--out", user_files / "o",
                   check=False)
    assert_one_line_error(result, "needs retain data", "--retain")
    assert not (user_files / "o").exists()
    with pytest.raises(UserError, match="row 0 column 'q' must be non-empty text"):
        (user_files / "blank.json").write_text(json.dumps([{"q": " ", "a": "x"}]))
        from_files(str(user_files / "blank.json"), None, Columns("q", "a"))
