"""What a new user hit on a clean clone: numeric options, file modes, Ctrl-C and reruns, empty output folders."""

import os
import signal
import subprocess
import sys
import time

import pytest

ALTER = [sys.executable, "-m", "alter.cli.main"]


def run(args, **kwargs):
    return subprocess.run(ALTER + args, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.parametrize("args, message", [
    (["finetune", "--model", "tiny", "--split", "full", "--lr", "-5"], "--lr: expected a number > 0, got -5"),
    (["finetune", "--model", "tiny", "--split", "full", "--epochs", "-1"], "--epochs: expected a number > 0, got -1"),
    (["eval", "tofu", "--model", "tiny", "--limit", "-3"], "--limit: expected a whole number >= 1, got -3"),
])
def test_numeric_options_are_validated_and_no_output_folder_is_left(args, message, small_world, tmp_path):
    out = tmp_path / "out"
    result = run(args + ["--data", str(small_world), "--out", str(out)])
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_outputs_follow_the_users_umask(umask, mode, tmp_path):
    script = (f"import os; os.umask({umask}); from alter.io import write_json; "
              f"write_json({str(tmp_path / 'a.json')!r}, {{'x': 1}})")
    subprocess.run([sys.executable, "-c", script], check=True)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode


def test_ctrl_c_says_how_to_resume_and_a_rerun_does_not_start_over(small_world, tmp_path):
    out = tmp_path / "target"
    command = ALTER + ["finetune", "--model", "tiny", "--data", str(small_world), "--split", "full",
                       "--out", str(out), "--precision", "fp32", "--epochs", "50"]
    # SIGINT's default action restored: a shell's background job (nohup ... &) would hand the child an ignored SIGINT
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not (out / "checkpoints").is_dir() and time.time() < deadline and process.poll() is None:
        time.sleep(0.5)
    assert (out / "checkpoints").is_dir(), "no checkpoint was written"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "interrupted; checkpoints are kept: rerun the same command with --resume" in stderr
    rerun = run(command[3:])
    assert rerun.returncode == 2 and "unfinished run; pass --resume" in rerun.stderr
    assert (out / "checkpoints").is_dir()
