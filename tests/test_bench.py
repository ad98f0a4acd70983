import json
import subprocess
import sys

from alter.evaluation.bench import Variant


def alter(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "alter.cli.main", *map(str, args)], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_variant_parsing():
    assert Variant.parse("npo") == Variant("npo", "npo", [])
    assert Variant.parse("graddiff+lora") == Variant("graddiff+lora", "graddiff", ["lora.enabled=true"])
    assert Variant.parse("alter-shannon=alter:params.entropy=shannon") == \
        Variant("alter-shannon", "alter", ["params.entropy=shannon"])


def test_bench_runs_every_method_resumes_and_shares_its_model_cache(tmp_path):
    world = tmp_path / "world"
    alter("world", "tofu", "--out", world, "--authors", "5")
    common = ["bench", "tofu", "--model", "tiny", "--data", world, "--cache", tmp_path / "cache",
              "--finetune-args", "--epochs 2 --precision fp32",
              "--unlearn-args", "--set train.max_steps=2 --set train.precision=fp32"]
    quick_eval = ["--eval-args", "--limit 4 --max-new-tokens 8 --precision fp32"]
    first = alter(*common, *quick_eval, "--methods", "npo,alter", "--out", tmp_path / "bench")
    assert "$ alter finetune" in first.stdout
    bench = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert list(bench["rows"]) == ["target", "retain", "npo", "alter"]
    assert bench["rows"]["retain"]["forget_quality"] == 1.0
    assert bench["rows"]["alter"]["trainable_parameters"] < bench["rows"]["npo"]["trainable_parameters"]
    assert "| alter |" in (tmp_path / "bench" / "bench.md").read_text()

    again = alter(*common, *quick_eval, "--methods", "npo,alter", "--out", tmp_path / "bench")
    assert "$ alter" not in again.stdout  # everything reused

    other = alter(*common, "--eval-args", "--limit 3 --max-new-tokens 8 --precision fp32", "--methods", "npo",
                  "--out", tmp_path / "bench2")
    assert "$ alter finetune" not in other.stdout  # the models come from the shared cache
    assert other.stdout.count("$ alter eval") == 3  # new evaluation settings: retain, target, npo again
    assert other.stdout.count("$ alter unlearn") == 1

    report = alter("report", tmp_path / "bench")
    page = (tmp_path / "bench" / "report.html").read_text()
    assert "report.html" in report.stdout and page.count("data:image/png;base64,") == 3
    assert "class='tok " in page and "http" not in page.replace("http-equiv", "")
    assert {p.name for p in (tmp_path / "bench" / "report").iterdir()} == \
        {"quality_utility.png", "entropy_histogram.png", "training_curves.png"}


def test_bench_refuses_a_forget_split_absent_from_the_data(tmp_path):
    world = tmp_path / "world"
    alter("world", "tofu", "--out", world, "--authors", "5")
    result = alter("bench", "tofu", "--model", "tiny", "--data", world, "--forget-split", "forget50",
                   "--out", tmp_path / "b", "--cache", tmp_path / "cache", check=False)
    assert result.returncode == 2 and "forget50" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
