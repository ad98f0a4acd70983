"""Each metric against hand-computed values and independent computations, edge cases included."""

import math
import zlib

import numpy as np
import pytest
from scipy.stats import ks_2samp

from alter.metrics import aggregate, memorization, privacy, probability
from alter.metrics.rouge import rouge_l


def test_probability_and_normalised_probability():
    assert probability.answer_probability(math.log(2)) == pytest.approx(0.5)
    # P(correct) = 0.5, two wrong answers at 0.25 each: 0.5 / (0.5 + 0.5)
    assert probability.normalised_probability(math.log(2), [math.log(4), math.log(4)]) == pytest.approx(0.5)
    assert probability.normalised_probability(math.log(2), [50.0]) == pytest.approx(1.0, abs=1e-12)


def test_truth_ratio_is_geometric_mean_of_wrong_over_correct():
    # P_correct = e^-1, P_wrong = exp(-(2 + 4) / 2) = e^-3  ->  tr = e^-2
    ratio = probability.truth_ratio(1.0, [2.0, 4.0])
    assert ratio == pytest.approx(math.exp(-2))
    geometric = math.sqrt(math.exp(-2) * math.exp(-4))
    assert ratio == pytest.approx(geometric / math.exp(-1))
    assert probability.forget_truth_score(ratio) == pytest.approx(math.exp(-2))
    assert probability.forget_truth_score(1 / ratio) == pytest.approx(math.exp(-2))
    assert probability.utility_truth_score(ratio) == pytest.approx(1 - math.exp(-2))
    assert probability.utility_truth_score(3.0) == 0.0  # wrong answers more likely: clipped at 0
    assert probability.forget_truth_score(1.0) == 1.0


@pytest.mark.parametrize("matches,es,em", [
    ([False, True, True], 2 / 3, 2 / 3),
    ([True, False, True, True], 0.5, 0.75),
    ([True, True, True], 1.0, 1.0),
    ([True, True, False], 0.0, 2 / 3),
    ([False], 0.0, 0.0),
    ([], 0.0, 0.0),
])
def test_extraction_strength_and_exact_memorization(matches, es, em):
    matches = np.array(matches, dtype=bool)
    assert memorization.extraction_strength(matches) == pytest.approx(es)
    assert memorization.exact_memorization(matches) == pytest.approx(em)


def test_rouge_l_recall_versus_f1_by_hand():
    # LCS("the cat sat", "the cat sat on the mat") = 3 tokens: recall 3/6, precision 3/3
    score = rouge_l("the cat sat", "the cat sat on the mat")
    assert score["recall"] == pytest.approx(0.5)
    assert score["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert rouge_l("", "anything")["recall"] == 0.0
    # the stemmer is on: "running" ~ "run", punctuation and case ignored
    assert rouge_l("He runs.", "he running")["recall"] == pytest.approx(1.0)


def test_forget_quality_is_the_ks_p_value():
    sample = [0.1, 0.5, 0.9, 0.3]
    assert aggregate.forget_quality(sample, sample) == pytest.approx(1.0)
    # fully separated samples of 5 and 5: exact two-sided p = 2 / C(10, 5)
    assert aggregate.forget_quality([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / math.comb(10, 5))
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=40), rng.normal(0.5, size=37)
    assert aggregate.forget_quality(a, b) == pytest.approx(ks_2samp(a, b).pvalue)


def _summary(values):
    return dict(zip(aggregate.UTILITY_KEYS, values))


def test_model_utility_harmonic_mean_and_zero():
    assert aggregate.model_utility(_summary([0.5] * 9)) == pytest.approx(0.5)
    values = [1, 2, 4, 1, 2, 4, 1, 2, 4]
    assert aggregate.model_utility(_summary(values)) == pytest.approx(9 / sum(1 / v for v in values))
    assert aggregate.model_utility(_summary([0.9] * 8 + [0.0])) == 0.0


def test_attack_scores_by_hand():
    logprobs = np.array([-1.0, -2.0, -3.0, -4.0, -5.0])
    assert privacy.loss_score(logprobs) == pytest.approx(3.0)
    assert privacy.min_k_score(logprobs) == pytest.approx(4.5)  # lowest 40% = 2 tokens: -5, -4
    assert privacy.min_k_score(logprobs[:2]) == pytest.approx(2.0)  # at least one token
    text = "Amara Szabo was born in Lisbon."
    assert privacy.zlib_score(logprobs, text) == pytest.approx(3.0 / len(zlib.compress(text.encode())))
    expected, std = np.full(5, -2.0), np.full(5, 2.0)
    # z = (lp + 2) / 2 = [0.5, 0, -0.5, -1, -1.5]; lowest two: -1.5, -1
    assert privacy.min_k_plus_plus_score(logprobs, expected, std) == pytest.approx(1.25)


def test_attack_auc_on_constructed_scores():
    assert privacy.attack_auc([1, 2, 3], [4, 5, 6]) == 1.0  # members clearly lower loss: fully recognisable
    assert privacy.attack_auc([4, 5, 6], [1, 2, 3]) == 0.0
    assert privacy.attack_auc([1, 2], [1, 2]) == 0.5
    # pairs (member < non-member): (1,2), (1,4), (3,4) of 4
    assert privacy.attack_auc([1, 3], [2, 4]) == pytest.approx(0.75)


def test_privleak():
    assert privacy.privleak(0.5, 0.5) == 0.0
    assert privacy.privleak(1.0, 0.5) == pytest.approx(-100.0)
    assert privacy.privleak(0.4, 0.5) == pytest.approx(20.0)
    assert privacy.privleak(0.9, 0.6) == pytest.approx((0.1 - 0.4) / 0.4 * 100)


def test_privleak_is_undefined_when_the_reference_auc_is_one():
    assert privacy.privleak(0.8, 1.0) is None
    value, note = privacy.privleak_or_note(0.8, 1.0)
    assert value is None and "undefined" in note
    assert privacy.privleak_or_note(0.4, 0.5) == (pytest.approx(20.0), None)


def test_bench_paired_differences_against_scipy():
    """Each run minus the first run on the units both ran, with scipy's paired t-interval; units only one of them
    ran, the target, the retain model and the tuning world stay out."""
    from scipy import stats

    from alter.pipelines.bench import markdown, paired_differences

    def unit(world, seed, run, quality, tuning=False):
        return {"world": world, "seed": seed, "tuning": tuning, "run": run, "protocol": "forget",
                "forget_quality": quality, "model_utility": 0.5, "undone_in_sample": None}

    alter = {("w1", 0): 0.10, ("w2", 0): 0.40, ("w3", 0): 0.25, ("w3", 1): 0.70}
    npo = {("w1", 0): 0.30, ("w2", 0): 0.45, ("w3", 1): 0.95, ("w4", 0): 0.99}  # w3 seed 0 missing, w4 alone
    units = [unit(w, s, "alter", q) for (w, s), q in alter.items()]
    units += [unit(w, s, "npo", q) for (w, s), q in npo.items()]
    units += [unit("w1", None, "target", 0.0), unit("w1", None, "retain", 1.0), unit("w0", 0, "alter", 0.9, True),
              unit("w0", 0, "npo", 0.0, True)]
    paired = paired_differences(units, tuning=False)
    shared = [("w1", 0), ("w2", 0), ("w3", 1)]
    test = stats.ttest_rel([npo[k] for k in shared], [alter[k] for k in shared])
    low, high = test.confidence_interval(0.95)
    row = paired["rows"]["npo"]
    assert paired["baseline"] == "alter" and list(paired["rows"]) == ["npo"] and row["units"] == 3
    assert row["forget_quality"] == pytest.approx(np.mean([0.20, 0.05, 0.25]))
    assert (row["intervals"]["forget_quality"]["low"], row["intervals"]["forget_quality"]["high"]) == \
        (pytest.approx(low), pytest.approx(high))
    assert row["model_utility"] == 0.0 and row.get("undone_in_sample") is None
    assert paired_differences(units, tuning=True)["rows"]["npo"]["forget_quality"] == pytest.approx(-0.9)
    assert paired_differences([u for u in units if u["run"] != "npo"], tuning=False) == {}

    table = markdown({"suite": "tofu", "rows": {"alter": {"forget_quality": 0.36, "units": 4}}, "tuning_rows": None,
                      "paired": paired})
    assert "Paired against `alter`" in table
    assert f"| npo | 3 | {np.mean([0.20, 0.05, 0.25]):.3g} ± {(high - low) / 2:.2g} | 0 ± 0 |\n" in table
    assert paired["keys"] == ["forget_quality", "model_utility"]  # only keys with a value: no privleak, no undone


def test_forgetting_verdict():
    moved, line = aggregate.forgetting_verdict(0.97, 0.40)
    assert moved and "0.970 -> 0.400" in line
    moved, line = aggregate.forgetting_verdict(0.971, 0.965)
    assert not moved and line.startswith("nothing was forgotten")


def test_bench_interval_and_undone_against_scipy():
    from scipy import stats

    from alter.pipelines.bench import interval, undone

    values = [0.2, 0.35, 0.5]
    got = interval(values)
    low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    assert got["mean"] == pytest.approx(0.35) and (got["low"], got["high"]) == (pytest.approx(low), pytest.approx(high))
    assert interval([0.4])["low"] is None and interval([None])["mean"] is None
    assert undone(0.3, target=0.9, retain=0.1) == pytest.approx(0.25)
    assert undone(0.1, 0.9, 0.1) == 0.0 and undone(0.9, 0.9, 0.1) == 1.0
    assert undone(0.5, 0.5, 0.5) is None and undone(None, 0.9, 0.1) is None
