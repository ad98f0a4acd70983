"""Every user mistake: one line on stderr naming the problem, exit status 2, nothing half-written."""

import json
import subprocess
import sys

import pytest


def alter(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "alter.cli.main", *args], capture_output=True, text=True, cwd=cwd,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"} | _python_env())


def _python_env():
    import os

    return {k: v for k, v in os.environ.items() if k in ("HOME", "PYTHONPATH", "ALTER_CACHE", "VIRTUAL_ENV")}


def assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alter: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_data_folder(tmp_path):
    result = alter("finetune", "--model", "tiny", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o"))
    assert_user_error(result, "data folder not found")


def test_missing_split(small_world, tmp_path):
    result = alter("finetune", "--model", "tiny", "--data", str(small_world), "--split", "retain42",
                   "--out", str(tmp_path / "o"))
    assert_user_error(result, "no split 'retain42'")
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_wrong_field(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "full.json").write_text(json.dumps([{"question": "q", "reply": "a"}]))
    result = alter("finetune", "--model", "tiny", "--data", str(data), "--out", str(tmp_path / "o"))
    assert_user_error(result, "full.json", "no field 'answer'")


def test_unknown_model_offline(small_world, tmp_path):
    result = alter("finetune", "--model", "nobody/no-such-model", "--data", str(small_world), "--out", str(tmp_path / "o"))
    assert_user_error(result, "unknown model 'nobody/no-such-model'")


def test_pickle_only_model_is_refused(small_world, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    result = alter("finetune", "--model", str(folder), "--data", str(small_world), "--out", str(tmp_path / "o"))
    assert_user_error(result, "pickle", "safetensors only")


def test_unwritable_output_folder(small_world, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = alter("finetune", "--model", "tiny", "--data", str(small_world), "--out", str(blocker / "out"))
    assert_user_error(result, "not writable")


def test_finished_run_is_not_overwritten(small_world, tmp_path):
    out = tmp_path / "done"
    out.mkdir()
    (out / "manifest.json").write_text('{"status": "complete"}')
    result = alter("finetune", "--model", "tiny", "--data", str(small_world), "--out", str(out))
    assert_user_error(result, "already holds a finished run")
    assert json.loads((out / "manifest.json").read_text()) == {"status": "complete"}


def test_world_rejects_too_few_authors(tmp_path):
    assert_user_error(alter("world", "tofu", "--out", str(tmp_path), "--authors", "1"), "--authors")


@pytest.mark.parametrize("command", [[], ["world", "tofu"], ["finetune"]])
def test_help_and_usage(command):
    assert alter(*command, "--help").returncode == 0
