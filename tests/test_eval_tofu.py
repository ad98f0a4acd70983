import json
import subprocess
import sys

import numpy as np
import pytest

from alter.metrics.aggregate import UTILITY_KEYS

SUMMARY_KEYS = ["forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio", "forget_quality", "model_utility",
                "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE",
                "ra_Truth_Ratio", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio", "extraction_strength",
                "exact_memorization", "mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "privleak"]


def run_eval(model, data, out, *extra):
    result = subprocess.run([sys.executable, "-m", "alter.cli.main", "eval", "tofu", "--model", str(model),
                             "--data", str(data), "--out", str(out), "--max-new-tokens", "40", "--precision", "fp32",
                             *extra], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def evaluated(tiny_runs, small_world):
    retain_out = tiny_runs / "eval-retain"
    run_eval(tiny_runs / "retain", small_world, retain_out)
    retain_log = retain_out / "TOFU_EVAL.json"
    target_out = tiny_runs / "eval-target"
    printed = run_eval(tiny_runs / "target", small_world, target_out, "--retain-logs", str(retain_log)).stdout
    self_out = tiny_runs / "eval-retain-self"
    run_eval(tiny_runs / "retain", small_world, self_out, "--retain-logs", str(retain_log))
    load = lambda folder, name: json.loads((folder / name).read_text())  # noqa: E731
    return {"target": load(target_out, "TOFU_SUMMARY.json"), "retain": load(retain_out, "TOFU_SUMMARY.json"),
            "self": load(self_out, "TOFU_SUMMARY.json"), "target_log": load(target_out, "TOFU_EVAL.json"),
            "printed": printed}


def test_every_summary_key_present_and_in_range(evaluated):
    summary = evaluated["target"]
    for key in SUMMARY_KEYS:
        assert key in summary, key
        assert summary[key] is not None, key
        if key != "privleak":
            assert 0.0 <= summary[key] <= 1.0, (key, summary[key])
    assert -100.0 <= summary["privleak"] <= 100.0
    assert summary["precision"] == "fp32"
    assert "forget_quality" in evaluated["printed"] and "model_utility" in evaluated["printed"]


def test_target_model_remembers_its_forget_set_better_than_the_retain_model(evaluated):
    target, retain = evaluated["target"], evaluated["retain"]
    assert target["forget_Q_A_Prob"] > retain["forget_Q_A_Prob"]
    assert target["mia_loss"] > retain["mia_loss"]


def test_retain_model_against_its_own_log_has_forget_quality_one(evaluated):
    assert evaluated["self"]["forget_quality"] == 1.0
    assert evaluated["self"]["privleak"] == 0.0


def test_without_retain_logs_the_keys_are_null_with_a_reason(evaluated):
    retain = evaluated["retain"]
    assert retain["forget_quality"] is None and retain["privleak"] is None
    assert any("--retain-logs" in note for note in retain["notes"])


def test_per_item_log_recomputes_the_summary(evaluated):
    log, summary = evaluated["target_log"], evaluated["target"]
    items = log["forget"]["items"]
    assert len(items) == 20 and set(items["0"]) >= {"generation", "prob", "truth_ratio", "rouge_recall", "mia"}
    mean_prob = sum(item["prob"] for item in items.values()) / len(items)
    assert mean_prob == pytest.approx(summary["forget_Q_A_Prob"])
    assert log["meta"]["precision"] == "fp32"
    assert all(0 <= summary[k] <= 1 for k in UTILITY_KEYS)


def test_limit_and_bad_retain_log(tiny_runs, small_world, tmp_path):
    bogus = tmp_path / "bogus.json"
    bogus.write_text("{}")
    result = subprocess.run([sys.executable, "-m", "alter.cli.main", "eval", "tofu", "--model", str(tiny_runs / "target"),
                             "--data", str(small_world), "--out", str(tmp_path / "o"), "--retain-logs", str(bogus)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "not a TOFU_EVAL.json" in result.stderr
    run_eval(tiny_runs / "target", small_world, tmp_path / "limited", "--limit", "3")
    log = json.loads((tmp_path / "limited" / "TOFU_EVAL.json").read_text())
    assert all(len(log[key]["items"]) == 3 for key in ("forget", "retain", "ra", "wf", "holdout"))


def test_token_records_multiply_to_the_answer_probability(evaluated):
    items = evaluated["target_log"]["forget"]["items"]
    logged = [item for item in items.values() if "tokens" in item]
    assert len(logged) == 8  # EvalSettings.token_view
    for item in logged:
        tokens = item["tokens"]
        assert len(tokens["text"]) == len(tokens["prob"]) == len(tokens["entropy"])
        geometric_mean = float(np.exp(np.mean(np.log(tokens["prob"]))))
        assert geometric_mean == pytest.approx(item["prob"], rel=1e-3)  # prob = exp(-mean token NLL)
        assert all(value >= 0 for value in tokens["entropy"]) and "route" not in tokens
