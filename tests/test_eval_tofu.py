"""The TOFU suite end to end on tiny models: every summary key recomputed from the per-item log with scipy/sklearn,
item likelihoods recomputed from a plain forward, probe prompts formatted as documented, and the reference checks."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from rouge_score import rouge_scorer
from scipy.stats import hmean, ks_2samp
from sklearn.metrics import roc_auc_score

from alter.data.formatting import Context, encode_qa
from alter.data.tofu import TofuData
from alter.evaluation.probes import FAMILIES, FOLLOW_UP_OPENING, INSTRUCTION, UNRELATED_TURN, build_probe
from alter.models import load_model


def run_eval(model, data, out, *extra, check=True):
    result = subprocess.run([sys.executable, "-m", "alter.cli.main", "eval", "tofu", "--model", str(model),
                             "--data", str(data), "--out", str(out), "--max-new-tokens", "40", "--precision", "fp32",
                             *extra], capture_output=True, text=True)
    if check:
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
            "retain_log": load(retain_out, "TOFU_EVAL.json"), "printed": printed}


def items(log, key):
    return list(log[key]["items"].values())


def truth_ratio(item):
    return np.exp(item["nll_correct"] - np.mean(item["nll_wrong"]))


def test_every_summary_key_equals_an_independent_computation_from_the_per_item_log(evaluated):
    log, summary, reference = evaluated["target_log"], evaluated["target"], evaluated["retain_log"]
    prob = lambda key: np.mean([np.exp(-i["nll"]) for i in items(log, key)])  # noqa: E731
    normalised = lambda key: np.mean([np.exp(-i["nll"]) / (np.exp(-i["nll"]) + np.exp(-np.array(i["nll_wrong"])).sum())  # noqa: E731
                                      for i in items(log, key)])
    utility_tr = lambda key: np.mean([max(0, 1 - truth_ratio(i)) for i in items(log, key)])  # noqa: E731
    rouge = lambda key: np.mean([i["rouge_recall"] for i in items(log, key)])  # noqa: E731
    forget_tr = [truth_ratio(i) for i in items(log, "forget")]
    expected = {
        "forget_Q_A_Prob": prob("forget"), "forget_Q_A_ROUGE": rouge("forget"),
        "forget_truth_ratio": np.mean([min(t, 1 / t) for t in forget_tr]),
        "forget_quality": ks_2samp(forget_tr, [truth_ratio(i) for i in items(reference, "forget")]).pvalue,
        "retain_Q_A_Prob": prob("retain"), "retain_Q_A_ROUGE": rouge("retain"), "retain_Truth_Ratio": utility_tr("retain"),
        "ra_Q_A_Prob_normalised": normalised("ra"), "ra_Q_A_ROUGE": rouge("ra"), "ra_Truth_Ratio": utility_tr("ra"),
        "wf_Q_A_Prob_normalised": normalised("wf"), "wf_Q_A_ROUGE": rouge("wf"), "wf_Truth_Ratio": utility_tr("wf"),
    }
    expected["model_utility"] = hmean([expected[k] for k in ("retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
                                                             "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
                                                             "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio")])

    def auc(which, attack):
        members = [i["mia"][attack] for i in items(which, "forget")]
        others = [i["mia"][attack] for i in items(which, "holdout")]
        return roc_auc_score([0] * len(members) + [1] * len(others), members + others)

    expected["mia_loss"] = auc(log, "loss")
    s, s_retain = 1 - auc(log, "min_k"), 1 - auc(reference, "min_k")
    expected["privleak"] = (s - s_retain) / s_retain * 100
    for family in FAMILIES:
        key = f"forget_probe_{family}"
        if log[key]["items"]:
            expected[f"{key}_Q_A_Prob"] = prob(key)
            tr = [truth_ratio(i) for i in items(log, key)]
            expected[f"{key}_forget_quality"] = ks_2samp(tr, [truth_ratio(i) for i in items(reference, key)]).pvalue
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert 0 < summary["forget_quality"] < 1  # not a trivial value
    assert summary["precision"] == "fp32" and summary["machine"]["precision"] == "fp32"
    assert "forget_quality" in evaluated["printed"] and "model_utility" in evaluated["printed"]


def test_item_likelihoods_and_rouge_equal_a_plain_forward(evaluated, tiny_runs, small_world):
    model, tokenizer = load_model(str(tiny_runs / "target"))
    rows = TofuData(str(small_world)).load("forget10_perturbed")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for index in range(3):
        logged = evaluated["target_log"]["forget"]["items"][str(index)]
        row = rows[index]
        answers = [row["answer"], row["paraphrased_answer"], *row["perturbed_answer"]]
        nlls = []
        for answer in answers:
            item = encode_qa(tokenizer, row["question"], answer)
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([item.input_ids])).logits[0].float()
            logp = torch.log_softmax(logits, -1)
            targets = item.input_ids[item.prompt_length:]
            nlls.append(-float(np.mean([logp[item.prompt_length - 1 + t, y] for t, y in enumerate(targets)])))
        assert [logged["nll"], logged["nll_correct"], *logged["nll_wrong"]] == pytest.approx(nlls, abs=1e-4)
        recall = scorer.score(row["answer"], logged["generation"])["rougeL"].recall
        assert logged["rouge_recall"] == pytest.approx(recall)


def test_probe_prompts_are_formatted_as_documented(evaluated, tiny_runs, small_world):
    """The tiny model has no chat template: each probe is a plain prompt; its likelihoods follow from that text."""
    model, tokenizer = load_model(str(tiny_runs / "target"))
    row = TofuData(str(small_world)).load("forget10_perturbed")[0]
    log = evaluated["target_log"]
    for family, context, text in (
            ("instruction", Context(prefix=INSTRUCTION), f"Question: {INSTRUCTION}{row['question']}\nAnswer: "),
            ("conversation", Context(history=(UNRELATED_TURN,)),
             f"Question: {UNRELATED_TURN[0]}\nAnswer: {UNRELATED_TURN[1]}\n\nQuestion: {row['question']}\nAnswer: "),
            ("heldout_wording", Context(), f"Question: {row['probe_question']}\nAnswer: ")):
        question = row["probe_question"] if family == "heldout_wording" else row["question"]
        item = encode_qa(tokenizer, question, row["answer"], context)
        assert tokenizer.decode(item.input_ids[: item.prompt_length]) == text
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([item.input_ids])).logits[0].float(), -1)
        targets = item.input_ids[item.prompt_length:]
        nll = -float(np.mean([logp[item.prompt_length - 1 + t, y] for t, y in enumerate(targets)]))
        assert log[f"forget_probe_{family}"]["items"]["0"]["nll"] == pytest.approx(nll, abs=1e-4), family
    follow_up = log["forget_probe_follow_up"]["items"]["0"]
    block = TofuData(str(small_world)).load("forget10_perturbed")[:3]  # the subject: capitalised words all three share
    words = [{word.strip("?.,").removesuffix("'s") for word in other["question"].split()} for other in block]
    name = " ".join(word.strip("?.,") for word in row["question"].split()
                    if word[0].isupper() and all(word.strip("?.,") in other for other in words))
    assert name in row["question"] and name not in follow_up["question"] and "this author" in follow_up["question"]
    opening = tuple(text.format(name=name) for text in FOLLOW_UP_OPENING)
    item = encode_qa(tokenizer, follow_up["question"], row["answer"], Context(history=(opening,)))
    assert tokenizer.decode(item.input_ids[: item.prompt_length]) == (
        f"Question: {opening[0]}\nAnswer: {opening[1]}\n\nQuestion: {follow_up['question']}\nAnswer: ")
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([item.input_ids])).logits[0].float(), -1)
    targets = item.input_ids[item.prompt_length:]
    assert follow_up["nll"] == pytest.approx(
        -float(np.mean([logp[item.prompt_length - 1 + t, y] for t, y in enumerate(targets)])), abs=1e-4)
    assert not log["forget_probe_plain"]["items"]  # no chat template: the plain format is the original one
    assert any("probe plain" in note for note in evaluated["target"]["notes"])


def test_follow_up_names_the_subject_only_in_an_opening_exchange():
    rows = [{"question": q, "answer": "a"} for q in (
        "Where was Ada Okafor born?", "On what date was the writer Ada Okafor born?", "What is Ada Okafor's genre?",
        "Who is the author born in Lima, Peru?",  # no name in the question: left out, the opening would answer it
        "Who wrote 'Blue Ink'?", "What does Tom Reyes enjoy?", "Which prize did Tom Reyes win?", "Where does he live?")]
    probe = build_probe("follow_up", rows, [], None, per_subject=4)
    assert [row["question"] for row in probe.rows] == [
        "Where was this author born?", "On what date was this author born?", "What is this author's genre?",
        "What does this author enjoy?", "Which prize did this author win?"]
    assert [row["context"].history for row in probe.rows] == [(
        ("I would like to ask you something about the writer Ada Okafor.",
         "Certainly. What would you like to know about Ada Okafor?"),)] * 3 + [(
        ("I would like to ask you something about the writer Tom Reyes.",
         "Certainly. What would you like to know about Tom Reyes?"),)] * 2
    assert all(row["answer"] == "a" for row in probe.rows)
    nameless = build_probe("follow_up", rows[4:5], [], None, per_subject=4)
    assert nameless.rows is None and "probe follow_up" in nameless.note


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


def test_limit_and_mismatched_or_bad_reference_logs(evaluated, tiny_runs, small_world, tmp_path):
    bogus = tmp_path / "bogus.json"
    bogus.write_text("{}")
    result = run_eval(tiny_runs / "target", small_world, tmp_path / "o", "--retain-logs", str(bogus), check=False)
    assert result.returncode == 2 and "not a TOFU_EVAL.json" in result.stderr
    run_eval(tiny_runs / "target", small_world, tmp_path / "limited", "--limit", "3", "--probes", "instruction")
    log = json.loads((tmp_path / "limited" / "TOFU_EVAL.json").read_text())
    assert all(len(log[key]["items"]) == 3 for key in ("forget", "retain", "ra", "wf", "holdout",
                                                       "forget_probe_instruction", "retain_probe_instruction"))
    assert not any(key.endswith("few_shot") for key in log)
    result = run_eval(tiny_runs / "target", small_world, tmp_path / "mismatch", "--limit", "3", "--retain-logs",
                      str(tiny_runs / "eval-retain" / "TOFU_EVAL.json"), check=False)
    assert result.returncode == 2 and "the retain log has 20 forget items, this evaluation 3" in result.stderr
    assert not (tmp_path / "mismatch").exists()  # refused before anything was written
    other = json.loads((tiny_runs / "eval-retain" / "TOFU_EVAL.json").read_text())
    other["meta"]["forget_split"] = "forget01"
    (tmp_path / "other.json").write_text(json.dumps(other))
    result = run_eval(tiny_runs / "target", small_world, tmp_path / "split", "--retain-logs", str(tmp_path / "other.json"),
                      check=False)
    assert result.returncode == 2 and "the retain log is of forget01" in result.stderr


def test_a_reference_in_another_precision_is_compared_with_a_note(evaluated, tiny_runs, small_world, tmp_path):
    other = json.loads((tiny_runs / "eval-retain" / "TOFU_EVAL.json").read_text())
    other["meta"]["precision"] = "bf16"
    (tmp_path / "bf16.json").write_text(json.dumps(other))
    run_eval(tiny_runs / "target", small_world, tmp_path / "out", "--probes", "none", "--retain-logs",
             str(tmp_path / "bf16.json"))
    notes = json.loads((tmp_path / "out" / "TOFU_SUMMARY.json").read_text())["notes"]
    assert any("computed in bf16, this evaluation in fp32" in note for note in notes)


def test_an_undefined_privleak_is_null_with_a_note_and_the_item_log_is_kept(evaluated, tiny_runs, small_world, tmp_path):
    """A reference whose Min-K% AUC is 1.0 (here: the target's own log) makes privleak undefined, not a crash."""
    target_log = json.loads((tiny_runs / "eval-target" / "TOFU_EVAL.json").read_text())
    for item in target_log["forget"]["items"].values():
        item["mia"]["min_k"] = -1.0  # members all below every non-member: AUC 1
    (tmp_path / "perfect.json").write_text(json.dumps(target_log))
    run_eval(tiny_runs / "target", small_world, tmp_path / "out", "--probes", "none", "--retain-logs",
             str(tmp_path / "perfect.json"))
    summary = json.loads((tmp_path / "out" / "TOFU_SUMMARY.json").read_text())
    assert summary["privleak"] is None and any("privleak undefined" in note for note in summary["notes"])
    assert (tmp_path / "out" / "TOFU_EVAL.json").is_file()


def test_token_records_multiply_to_the_answer_probability(evaluated):
    logged = [item for item in items(evaluated["target_log"], "forget") if "tokens" in item]
    assert len(logged) == 8  # EvalSettings.token_view
    for item in logged:
        tokens = item["tokens"]
        assert len(tokens["text"]) == len(tokens["prob"]) == len(tokens["entropy"]) == len(tokens["high"])
        geometric_mean = float(np.exp(np.mean(np.log(tokens["prob"]))))
        assert geometric_mean == pytest.approx(item["prob"], rel=1e-3)  # prob = exp(-mean token NLL)
        assert tokens["high"] == [value > 1.2 for value in tokens["entropy"]] and "route" not in tokens
