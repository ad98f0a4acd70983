import os
import shutil
import subprocess
import sys

import matplotlib.image
import pytest

from alter.report import plots


def alter(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "alter.cli.main", *map(str, args)], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and not os.environ.get("CI"):
        pytest.skip("chromium is not installed (.ci/run installs it)")
    assert path is not None, "CI must have chromium: .ci/run installs the Debian package"
    return path


def test_demo_fast_prints_answers_and_its_report_renders_in_a_browser(tmp_path):
    demo = alter("demo", "--fast", "--authors", "5", "--out", tmp_path / "demo", "--cache", tmp_path / "cache")
    assert "| alter |" in demo.stdout and "FORGET (should change)" in demo.stdout
    assert "RETAIN (should stay)" in demo.stdout and "report:" in demo.stdout
    page = tmp_path / "demo" / "report.html"
    screenshot = tmp_path / "page.png"
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--window-size=1200,2400", f"--screenshot={screenshot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[:2] == (2400, 1200)
    assert pixels[..., :3].std() > 0.05  # something was drawn: text, figures and coloured tokens, not a blank page


def test_report_on_a_single_unlearning_run_scores_tokens_before_and_after(tiny_runs, small_world, tmp_path):
    run = tmp_path / "npo"
    alter("unlearn", "--model", tiny_runs / "target", "--data", small_world, "--method", "npo", "--out", run,
          "--set", "train.max_steps=2", "--set", "train.precision=fp32")
    alter("report", run)
    page = (run / "report.html").read_text()
    assert page.count("<div class='item forget'>") == 4 and page.count("<div class='item retain'>") == 4
    assert "alt='curves'" in page and "alt='quality_utility'" not in page  # no evaluation, no FQ plot


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path):
    result = alter("report", tmp_path, check=False)
    assert result.returncode == 2 and "not a run" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_quality_utility_plot_skips_runs_without_numbers(tmp_path):
    rows = {"target": {"forget_quality": 1e-5, "model_utility": 0.5}, "retain": {"forget_quality": 1.0,
            "model_utility": 0.6}, "broken": {"forget_quality": None, "model_utility": 0.4}}
    plots.quality_utility(rows, tmp_path / "fq.png")
    assert matplotlib.image.imread(tmp_path / "fq.png").shape[2] in (3, 4)
