import json
import subprocess
import sys

from alter.evaluation.bench import Variant


def test_variant_parsing():
    assert Variant.parse("npo") == Variant("npo", "npo", [])
    assert Variant.parse("graddiff+lora") == Variant("graddiff+lora", "graddiff", ["lora.enabled=true"])
    assert Variant.parse("alter-shannon=alter:params.entropy=shannon") == \
        Variant("alter-shannon", "alter", ["params.entropy=shannon"])


def test_bench_runs_every_method_and_resumes(tmp_path):
    world = tmp_path / "world"
    subprocess.run([sys.executable, "-m", "alter.cli.main", "world", "tofu", "--out", str(world), "--authors", "5"],
                   check=True, capture_output=True)
    command = [sys.executable, "-m", "alter.cli.main", "bench", "tofu", "--model", "tiny", "--data", str(world),
               "--methods", "npo,alter", "--out", str(tmp_path / "bench"),
               "--finetune-args", "--epochs 2 --precision fp32",
               "--unlearn-args", "--set train.max_steps=2 --set train.precision=fp32",
               "--eval-args", "--limit 4 --max-new-tokens 8 --precision fp32"]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    bench = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert list(bench["rows"]) == ["target", "retain", "npo", "alter"]
    assert bench["rows"]["retain"]["forget_quality"] == 1.0
    assert bench["rows"]["alter"]["trainable_parameters"] < bench["rows"]["npo"]["trainable_parameters"]
    assert "| alter |" in (tmp_path / "bench" / "bench.md").read_text()
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0 and "$ alter" not in again.stdout  # everything reused
