"""Numerical faults, determinism, and data problems that must be reported, not silently absorbed."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from alter.errors import UserError
from alter.training.finetune import default_recipe, finetune, make_accelerator
from alter.training.loop import TrainConfig, TrainingDiverged, latest_checkpoint, train


class OneBatch:
    def batches_per_epoch(self):
        return 1

    def batch(self, epoch, index):
        return {"x": torch.ones(2, 3)}


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 1)
    calls = {"n": 0}

    def objective(m, batch):
        calls["n"] += 1
        loss = m(batch["x"]).pow(2).mean()
        return (loss * float("nan") if calls["n"] > 3 else loss), {}

    config = TrainConfig(max_steps=10, checkpoint_every=1, learning_rate=1e-2, precision="fp32")
    with pytest.raises(TrainingDiverged, match="loss became nan at step 3"):
        train(model, objective, OneBatch(), config, make_accelerator("fp32"), checkpoints=tmp_path / "checkpoints")
    kept = latest_checkpoint(tmp_path / "checkpoints")
    assert kept is not None and json.loads((kept / "state.json").read_text())["step"] == 3


def test_same_seed_same_weights(small_world, tmp_path):
    recipe = default_recipe("tiny", lora=False)
    recipe = replace(recipe, train=replace(recipe.train, max_steps=4, precision="fp32"))
    for name in ("a", "b"):
        finetune("tiny", str(small_world), "forget10", str(tmp_path / name), recipe)
    first, second = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("a", "b"))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_overlapping_forget_and_retain_sets_warn_and_are_counted(tiny_runs, small_world, tmp_path):
    result = subprocess.run([sys.executable, "-m", "alter.cli.main", "unlearn", "--model", str(tiny_runs / "target"),
                             "--data", str(small_world), "--forget-split", "forget10", "--retain-split", "full",
                             "--method", "graddiff", "--out", str(tmp_path / "run"), "--set", "train.max_steps=1"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning: 20 retain items share a question with the forget set" in result.stderr
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["forget_retain_overlap"] == 20


def test_empty_forget_set_is_an_error(tmp_path, small_world):
    data = tmp_path / "data"
    data.mkdir()
    (data / "forget10.json").write_text("[]")
    (data / "retain90.json").write_text(json.dumps([{"question": "q", "answer": "a"}]))
    from alter.data.tofu import TofuData

    with pytest.raises(UserError, match="split 'forget10' is empty"):
        TofuData(str(data)).load("forget10")


def test_a_run_killed_mid_way_resumes_to_the_same_weights_and_metrics(small_world, tmp_path):
    """SIGKILL (no chance to clean up) after the first checkpoint; `--resume` must finish exactly like a straight run."""
    import signal
    import time

    command = [sys.executable, "-m", "alter.cli.main", "finetune", "--model", "tiny", "--data", str(small_world),
               "--split", "forget10", "--max-steps", "40", "--batch-size", "4", "--checkpoint-every", "5",
               "--precision", "fp32"]
    straight = subprocess.run([*command, "--out", str(tmp_path / "straight")], capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = subprocess.Popen([*command, "--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    pointer = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not pointer.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "manifest.json").exists()
    resumed = subprocess.run([*command, "--out", str(tmp_path / "killed"), "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    metrics = {}
    for name in ("straight", "killed"):
        evaluated = subprocess.run([sys.executable, "-m", "alter.cli.main", "eval", "tofu", "--model",
                                    str(tmp_path / name), "--data", str(small_world), "--out", str(tmp_path / f"e-{name}"),
                                    "--limit", "6", "--max-new-tokens", "8", "--precision", "fp32"],
                                   capture_output=True, text=True)
        assert evaluated.returncode == 0, evaluated.stderr[-2000:]
        metrics[name] = json.loads((tmp_path / f"e-{name}" / "TOFU_SUMMARY.json").read_text())
    assert metrics["straight"] == metrics["killed"]


@pytest.mark.skipif(sys.platform == "win32", reason="the watchdog is POSIX-only")
def test_a_bench_step_stops_when_its_bench_is_killed(tmp_path):
    """SIGKILL runs no cleanup in the bench, so the step's own watchdog must end it."""
    import os
    import signal
    import time

    (tmp_path / "waiter.py").write_text(
        "import os, time, pathlib\n"
        "def wait(path):\n    pathlib.Path(path).write_text(str(os.getpid()))\n    time.sleep(120)\n")
    pid_file = tmp_path / "step.pid"
    bench = subprocess.Popen([sys.executable, "-c", "from alter.pipelines.isolated import run_isolated; "
                              f"run_isolated('waiter:wait', path={str(pid_file)!r})"],
                             env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    deadline = time.time() + 60
    while not pid_file.is_file() and time.time() < deadline:
        time.sleep(0.2)
    step = int(pid_file.read_text())
    os.kill(bench.pid, signal.SIGKILL)
    bench.wait()
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            os.kill(step, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(step, signal.SIGKILL)
    pytest.fail("the step kept running after its bench was killed")
