"""scripts/value_tokens.py: the split of an answer into value and shared tokens, by hand."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "value_tokens.py"
spec = importlib.util.spec_from_file_location("value_tokens", SCRIPT)
value_tokens = importlib.util.module_from_spec(spec)
spec.loader.exec_module(value_tokens)


def test_value_tokens_are_those_outside_the_shared_runs():
    true_differs, wrong_differs = value_tokens.differing_tokens([1, 2, 3, 4, 9], [1, 2, 7, 8, 4, 9])
    assert true_differs.tolist() == [False, False, True, False, False]
    assert wrong_differs.tolist() == [False, False, True, True, False, False]


def test_item_split_averages_each_part_over_the_perturbed_answers():
    true_ids, true_lp, entropy = [1, 2, 3, 4], np.log([0.5, 0.5, 0.1, 1.0]), np.array([0.1, 0.2, 1.5, 0.0])
    wrong = [([1, 2, 5, 4], np.log([0.5, 0.5, 0.2, 1.0])),
             ([1, 2, 6, 6, 4], np.log([0.5, 0.5, 0.4, 0.1, 1.0])),
             ([1, 2, 3, 4], np.log([0.5, 0.5, 0.1, 1.0]))]  # no value token: left out
    split = value_tokens.item_split(true_ids, true_lp, entropy, wrong)
    assert split["true_value"] == pytest.approx(-np.log(0.1))
    assert split["wrong_value"] == pytest.approx((-np.log(0.2) + -(np.log(0.4) + np.log(0.1)) / 2) / 2)
    assert split["shared"] == pytest.approx(-(2 * np.log(0.5) + np.log(1.0)) / 3)
    assert split["first_value_entropy"] == pytest.approx(1.5)
    assert np.isnan(value_tokens.item_split(true_ids, true_lp, entropy, wrong[2:])["true_value"])
