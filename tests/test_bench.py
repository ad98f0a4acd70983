"""The bench: every method from one target, evaluation against the retain model, resumable, a shared model cache,
several worlds and seeds with intervals, and a report whose numbers are bench.json's."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from alter.pipelines.bench import PAPER_VARIANT, Variant, with_paper_variant


def alter(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "alter.cli.main", *map(str, args)], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_variant_parsing_and_the_paper_recipe_beside_alter():
    assert Variant.parse("npo") == Variant("npo", "npo", [])
    assert Variant.parse("graddiff+lora") == Variant("graddiff+lora", "graddiff", ["lora.enabled=true"])
    assert Variant.parse("alter-shannon=alter:params.entropy=shannon") == \
        Variant("alter-shannon", "alter", ["params.entropy=shannon"])
    paper = Variant.parse(PAPER_VARIANT)
    assert paper.method == "alter" and "params.router=layer" in paper.overrides
    assert [v.name for v in with_paper_variant([Variant.parse("alter"), Variant.parse("npo")])] == \
        ["alter", "npo", PAPER_VARIANT]
    assert [v.name for v in with_paper_variant([Variant.parse("npo")])] == ["npo"]


QUICK = ["--finetune-epochs", "2", "--precision", "fp32", "--max-new-tokens", "8"]


def test_bench_runs_every_method_resumes_shares_its_cache_and_reports_its_numbers(tmp_path):
    world = tmp_path / "world"
    alter("world", "tofu", "--out", world, "--authors", "5")
    common = ["bench", "tofu", "--model", "tiny", "--data", world, "--cache", tmp_path / "cache", *QUICK,
              "--probes", "instruction"]
    methods = "npo=npo:train.max_steps=2,alter=alter:train.max_steps=2"
    first = alter(*common, "--limit", "4", "--methods", methods, "--out", tmp_path / "bench")
    assert "finetune_step" in first.stdout
    bench = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert list(bench["rows"]) == ["npo", "alter", PAPER_VARIANT, "target", "retain"]
    rows = bench["rows"]
    assert rows["retain"]["forget_quality"] == 1.0
    assert rows["alter"]["trainable_parameters"] < rows["npo"]["trainable_parameters"]
    assert rows["target"]["undone_in_sample"] == 1.0 and rows["retain"]["undone_in_sample"] == 0.0
    assert "retain_probe_instruction_gate_rate" in rows["alter"] and "forget_gate_rate" in rows["alter"]
    table = (tmp_path / "bench" / "bench.md").read_text()
    assert "| alter |" in table and "undone instruction" in table

    again = alter(*common, "--limit", "4", "--methods", methods, "--out", tmp_path / "bench")
    assert "bench:" not in again.stdout  # everything reused

    other = alter(*common, "--limit", "3", "--methods", "npo=npo:train.max_steps=2", "--out", tmp_path / "bench2")
    assert "finetune_step" not in other.stdout  # the models come from the shared cache
    assert other.stdout.count("eval_step") == 3  # new evaluation settings: retain, target, npo again
    assert other.stdout.count("unlearn_step") == 1

    alter("report", tmp_path / "bench")
    page = (tmp_path / "bench" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "class='tok " in page
    assert "http" not in page.replace("http-equiv", "")
    shown = dict(re.findall(r"<tr><th>([\w-]+)</th><td>([^<]+)</td>", page.split("<caption>Forgetting")[1]
                            .split("</table>")[0]))
    for name, row in rows.items():  # the first column of the forgetting table: forget_quality
        assert shown[name] == f"{row['forget_quality']:.3g}", name
    assert "nothing was forgotten" in page or "forget answers' probability" in page  # a verdict per run


def test_several_worlds_and_seeds_give_means_and_intervals(tmp_path):
    alter("bench", "tofu", "--model", "tiny", "--worlds", "2", "--seeds", "2", "--authors", "5", "--cache",
          tmp_path / "cache", *QUICK, "--limit", "3", "--probes", "none", "--methods", "npo=npo:train.max_steps=2",
          "--out", tmp_path / "bench")
    bench = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert [w["name"] for w in bench["worlds"]] == ["seed-1", "seed-2"]
    npo = [u for u in bench["units"] if u["run"] == "npo"]
    assert sorted((u["world"], u["seed"]) for u in npo) == [("seed-1", 0), ("seed-1", 1), ("seed-2", 0), ("seed-2", 1)]
    values = [u["forget_Q_A_Prob"] for u in npo]
    row = bench["rows"]["npo"]
    assert row["units"] == 4 and row["forget_Q_A_Prob"] == pytest.approx(np.mean(values))
    assert row["intervals"]["forget_Q_A_Prob"]["low"] < row["forget_Q_A_Prob"] < row["intervals"]["forget_Q_A_Prob"]["high"]
    assert bench["tuning_rows"] is None
    assert "±" in (tmp_path / "bench" / "bench.md").read_text()


def test_bench_refuses_a_forget_split_absent_from_the_data(tmp_path):
    world = tmp_path / "world"
    alter("world", "tofu", "--out", world, "--authors", "5")
    result = alter("bench", "tofu", "--model", "tiny", "--data", world, "--forget-split", "forget50",
                   "--out", tmp_path / "b", "--cache", tmp_path / "cache", check=False)
    assert result.returncode == 2 and "forget50" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "cache").exists() and not (tmp_path / "b").exists()
