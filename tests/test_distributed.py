"""`accelerate launch --num_processes 2 --cpu`: fine-tuning, unlearning (NPO and ALTER) and evaluation on the tiny
model, compared with one process at the same global batch.

Tolerances: fine-tuning sees the same rows per step in both set-ups; only the loss weighting differs (DDP averages
two per-rank token means instead of one mean over all tokens), so weights agree to 2e-3. Unlearning also samples its
retain rows per rank, so the forget answer probability agrees to 0.05. Evaluation shards items over the ranks and
gathers them: every per-item value agrees to 1e-4 (fp32).
"""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "alter.cli.main"]
SINGLE = [sys.executable, "-m", "alter.cli.main"]


def run(prefix, *args):
    result = subprocess.run([*prefix, *map(str, args)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def only_published_files(folder):
    names = {p.name for p in folder.iterdir()}
    assert not any(name.startswith((".publish-", ".write-probe-")) for name in names), names
    assert "checkpoints" not in names
    return names


@pytest.fixture(scope="module")
def finetuned(small_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp-finetune")
    common = ["finetune", "--model", "tiny", "--data", small_world, "--split", "full", "--max-steps", "4",
              "--precision", "fp32"]
    run(SINGLE, *common, "--batch-size", "16", "--out", root / "one")
    run(LAUNCH, *common, "--batch-size", "8", "--out", root / "two")
    return root


def test_two_process_finetuning_matches_one_process(finetuned):
    one = load_file(str(finetuned / "one" / "model.safetensors"))
    two = load_file(str(finetuned / "two" / "model.safetensors"))
    assert one.keys() == two.keys()
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 2e-3
    assert not all(torch.equal(one[k], two[k]) for k in one)  # two real processes, not a copy of one
    manifest = json.loads((finetuned / "two" / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["steps"] == 4
    assert "manifest.json" in only_published_files(finetuned / "two")


@pytest.mark.parametrize("method", ["npo", "alter"])
def test_two_process_unlearning_agrees_with_one_process(method, tiny_runs, small_world, tmp_path):
    common = ["unlearn", "--model", tiny_runs / "target", "--data", small_world, "--method", method,
              "--set", "train.max_steps=3", "--set", "train.precision=fp32", "--set", "train.warmup_ratio=0"]
    if method == "alter":
        common += ["--set", "params.lr_b=0.01"]
    batch = 4 if method == "alter" else 8
    run(SINGLE, *common, "--set", f"train.batch_size={batch}", "--out", tmp_path / "one")
    run(LAUNCH, *common, "--set", f"train.batch_size={batch // 2}", "--out", tmp_path / "two")
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["processes"] == 2
    only_published_files(tmp_path / "two")
    probs = {}
    for name in ("one", "two"):
        model = ["--model", tiny_runs / "target", "--adapter", tmp_path / name] if method == "alter" \
            else ["--model", tmp_path / name]
        run(SINGLE, "eval", "tofu", *model, "--data", small_world, "--out", tmp_path / f"eval-{name}",
            "--limit", "8", "--max-new-tokens", "4", "--precision", "fp32")
        probs[name] = json.loads((tmp_path / f"eval-{name}" / "TOFU_SUMMARY.json").read_text())["forget_Q_A_Prob"]
    assert probs["one"] == pytest.approx(probs["two"], abs=0.05)


def test_two_process_evaluation_gathers_every_item(finetuned, small_world):
    common = ["eval", "tofu", "--model", finetuned / "one", "--data", small_world, "--max-new-tokens", "8",
              "--precision", "fp32"]
    run(SINGLE, *common, "--out", finetuned / "eval-one")
    run(LAUNCH, *common, "--out", finetuned / "eval-two")
    one = json.loads((finetuned / "eval-one" / "TOFU_EVAL.json").read_text())
    two = json.loads((finetuned / "eval-two" / "TOFU_EVAL.json").read_text())
    assert two["meta"]["processes"] == 2
    for subset in ("forget", "retain", "ra", "wf", "holdout"):
        assert list(one[subset]["items"]) == list(two[subset]["items"])
        for index, item in one[subset]["items"].items():
            assert two[subset]["items"][index]["nll"] == pytest.approx(item["nll"], abs=1e-4)
            assert two[subset]["items"][index].get("generation") == item.get("generation")
