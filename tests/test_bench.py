"""The bench: every method from one target, evaluation against the retain model, resumable, a shared model cache,
several worlds and seeds with intervals, and a report whose numbers are bench.json's."""

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from alter.pipelines import bench as bench_module
from alter.pipelines.bench import PAPER_VARIANT, Variant, changed_settings, run_step, with_paper_variant


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


def test_a_run_made_under_other_settings_names_the_settings_that_changed(tmp_path, monkeypatch, capsys):
    def finish(function, **kwargs):
        (tmp_path / "run" / "done").write_text("x")

    monkeypatch.setattr(bench_module, "run_isolated", finish)
    recipe = {"method": "alter", "params": {"plain_nll": True, "lr_b": 0.002}, "train": {"seed": 0}}
    run_step(tmp_path / "run", "key-1", "done", "alter.pipelines.steps:unlearn_step", key_settings=recipe)
    assert json.loads((tmp_path / "run" / "bench_settings.json").read_text()) == recipe
    changed = {"method": "alter", "params": {"plain_nll": False, "lr_b": 0.002, "rank": 8}, "train": {"seed": 0}}
    run_step(tmp_path / "run", "key-2", "done", "alter.pipelines.steps:unlearn_step", key_settings=changed)
    assert "made with other settings (params.plain_nll: True -> False, params.rank: unset -> 8), recomputing" in \
        capsys.readouterr().out
    run_step(tmp_path / "run", "key-3", "done", "alter.pipelines.steps:unlearn_step", key_settings=changed)
    assert "(same settings, an earlier input: model, data or a previous step)" in capsys.readouterr().out
    assert changed_settings({"a": {"b": 1}}, {"a": {"b": 1}}) == ""
    many = changed_settings({f"k{i}": 0 for i in range(7)}, {f"k{i}": 1 for i in range(7)})
    assert many == "k0: 0 -> 1, k1: 0 -> 1, k2: 0 -> 1, k3: 0 -> 1, k4: 0 -> 1, and 2 more"


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
    paired = bench["paired"]  # every run against the first method, on the one unit they share
    assert paired["baseline"] == "npo" and list(paired["rows"]) == ["alter", PAPER_VARIANT]
    assert paired["rows"]["alter"]["units"] == 1
    assert paired["rows"]["alter"]["undone_in_sample"] == \
        pytest.approx(rows["alter"]["undone_in_sample"] - rows["npo"]["undone_in_sample"])
    assert "Paired against `npo`" in table

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
    assert "<caption>Paired against npo" in page
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

    # the same runs collected from outside (`alter bench collect`) give the bench's own rows
    listing = [{key: unit[key] for key in ("world", "run", "run_dir", "eval_dir", "seed")} for unit in bench["units"]]
    (tmp_path / "listing.json").write_text(json.dumps(listing))
    alter("bench", "collect", tmp_path / "listing.json", "--out", tmp_path / "collected")
    collected = json.loads((tmp_path / "collected" / "bench.json").read_text())
    assert collected["rows"] == bench["rows"]
    assert (tmp_path / "collected" / "bench.md").read_text() == (tmp_path / "bench" / "bench.md").read_text()
    assert (collected["model"], collected["forget_split"]) == ("tiny", "forget10")  # from the runs' manifests
    alter("report", tmp_path / "collected")
    assert "from tiny (2 worlds, 2 seeds)" in (tmp_path / "collected" / "report.html").read_text()
    (tmp_path / "bad.json").write_text(json.dumps([{**listing[0], "eval_dir": ""}]))
    refused = alter("bench", "collect", tmp_path / "bad.json", "--out", tmp_path / "bad", check=False)
    assert refused.returncode != 0 and "entry 1: missing eval_dir" in refused.stderr
    (tmp_path / "alone.json").write_text(json.dumps([u for u in listing if u["run"] == "npo"]))
    refused = alter("bench", "collect", tmp_path / "alone.json", "--out", tmp_path / "bad", check=False)
    assert refused.returncode != 0 and "needs a 'target' and a 'retain' entry" in refused.stderr
    assert not (tmp_path / "bad").exists()
    # every unit from the tuning world: one table under that name, not the same rows twice; marking the runs alone
    # marks their worlds' target and retain models too
    (tmp_path / "tuning.json").write_text(json.dumps([{**unit, "tuning": unit["run"] == "npo"} for unit in listing]))
    alter("bench", "collect", tmp_path / "tuning.json", "--out", tmp_path / "tuning")
    tuning = json.loads((tmp_path / "tuning" / "bench.json").read_text())
    assert tuning["rows"] == bench["rows"] and tuning["tuning_rows"] is None and tuning["tuning_paired"] is None
    text = (tmp_path / "tuning" / "bench.md").read_text()
    assert text.count("### ") == 1 and "### tuning world (seed 0)" in text and "held-out" not in text
    alter("report", tmp_path / "tuning")
    page = html.unescape((tmp_path / "tuning" / "report.html").read_text())
    assert "means over the tuning world's units and seeds" in page and "held-out worlds" not in page


def test_bench_refuses_a_forget_split_absent_from_the_data(tmp_path):
    world = tmp_path / "world"
    alter("world", "tofu", "--out", world, "--authors", "5")
    result = alter("bench", "tofu", "--model", "tiny", "--data", world, "--forget-split", "forget50",
                   "--out", tmp_path / "b", "--cache", tmp_path / "cache", check=False)
    assert result.returncode == 2 and "forget50" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "cache").exists() and not (tmp_path / "b").exists()


def test_muse_bench_runs_the_scalability_and_sustainability_protocols(tmp_path):
    world = tmp_path / "world"
    alter("world", "muse", "--out", world, "--articles", "12", "--holdout", "6", "--requests", "2")
    alter("bench", "muse", "--model", "tiny", "--data", world, "--cache", tmp_path / "cache", *QUICK, "--limit", "4",
          "--methods", "npo=npo:train.max_steps=2,alter=alter:train.max_steps=2", "--out", tmp_path / "bench")
    bench = json.loads((tmp_path / "bench" / "bench.json").read_text())
    rows = bench["rows"]
    assert {name: rows[name]["protocol"] for name in ("npo", "npo@upto1", "npo@seq2", "alter@seq2-without1")} == \
        {"npo": "forget", "npo@upto1": "scalability", "npo@seq2": "sustainability",
         "alter@seq2-without1": "sustainability"}
    assert "alter-paper@seq1" not in rows  # its layer routers cannot take a request's heads
    assert rows["alter@seq1"]["run_dir"] == rows["alter@upto1"]["run_dir"]  # request 1 alone is upto1's run
    configs = {name: json.loads((Path(rows[name]["run_dir"]) / "alter_config.json").read_text())["config"]
               for name in ("alter@seq2", "alter@seq2-without1")}
    assert configs["alter@seq2"]["head_requests"][-1] == 2 and 1 in configs["alter@seq2"]["head_requests"]
    assert set(configs["alter@seq2-without1"]["head_requests"]) == {2}
    npo_seq2 = json.loads((Path(rows["npo@seq2"]["run_dir"]) / "manifest.json").read_text())
    assert Path(npo_seq2["base_model"]) == Path(rows["npo@seq1"]["run_dir"])  # continues from request 1's model
    for key in ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "privleak"):
        assert key in rows["npo"]
    table = (tmp_path / "bench" / "bench.md").read_text()
    assert "Scalability" in table and "Sustainability" in table and "| alter@seq2-without1 |" in table
    alter("report", tmp_path / "bench")
    assert "forget KnowMem ROUGE" in (tmp_path / "bench" / "report.html").read_text()


def test_wmdp_bench_scores_both_domains_with_canonical_rmu(tmp_path):
    world = tmp_path / "world"
    alter("world", "wmdp", "--out", world, "--entities", "10")
    alter("bench", "wmdp", "--model", "tiny", "--data", world, "--cache", tmp_path / "cache", *QUICK, "--limit", "8",
          "--methods", "rmu-c=rmu:params.update=canonical:params.layer=1:train.max_steps=2", "--out", tmp_path / "bench")
    rows = json.loads((tmp_path / "bench" / "bench.json").read_text())["rows"]
    assert set(rows) == {"rmu-c", "target", "retain"}
    assert all(0 <= rows[name]["hazardous_accuracy"] <= 1 and rows[name]["general_chance"] == 0.25 for name in rows)
    assert rows["rmu-c"]["trainable_parameters"] < rows["target"]["trainable_parameters"] / 4
    assert "| rmu-c |" in (tmp_path / "bench" / "bench.md").read_text()
    alter("report", tmp_path / "bench")
    assert "hazardous cloze accuracy" in (tmp_path / "bench" / "report.html").read_text()  # the verdict's measure
    bad = alter("bench", "muse", "--model", "tiny", "--data", world, "--protocols", "forget,later",
                "--out", tmp_path / "b2", "--cache", tmp_path / "cache", check=False)
    assert bad.returncode == 2 and "--protocols" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    alter("world", "muse", "--out", tmp_path / "muse", "--articles", "8", "--holdout", "4", "--requests", "2")
    lora = alter("bench", "muse", "--model", "tiny", "--data", tmp_path / "muse", "--methods", "npo+lora",
                 "--out", tmp_path / "b3", "--cache", tmp_path / "cache3", check=False)
    assert lora.returncode == 2 and "LoRA adapter" in lora.stderr and len(lora.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b3").exists() and not (tmp_path / "cache3").exists()
