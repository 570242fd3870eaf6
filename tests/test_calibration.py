"""Tests of companion.calibration (reliability diagram, expected calibration error) and its figure."""

from __future__ import annotations

import math
from fractions import Fraction

import matplotlib
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import plotting
from companion.calibration import expected_calibration_error, reliability_diagram

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)


def random_probs(n: int, k: int, seed: int, temperature: float = 1.0) -> torch.Tensor:
    logits = 2 * torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.softmax(logits / temperature, -1)


# A hand-computed example with two bins, (0, 0.5] and (0.5, 1]:
#   bin 0: confidences 0.4, 0.4, one right -> conf 0.4, acc 1/2, gap 0.1, weight 2/5
#   bin 1: confidences 0.8, 0.7, 0.6, two right -> conf 0.7, acc 2/3, gap 1/30, weight 3/5
#   ECE = 2/5 * 0.1 + 3/5 * 1/30 = 0.04 + 0.02 = 0.06
TWO_BIN_PROBS = torch.tensor([[0.4, 0.3, 0.2, 0.1],
                              [0.3, 0.4, 0.2, 0.1],
                              [0.8, 0.1, 0.1, 0.0],
                              [0.1, 0.7, 0.1, 0.1],
                              [0.6, 0.2, 0.1, 0.1]], dtype=torch.float64)
TWO_BIN_TARGETS = torch.tensor([0, 0, 0, 1, 2])


def brute_force_ece(probs: torch.Tensor, targets: torch.Tensor, n_bins: int) -> float:
    """The definition, sums in exact rational arithmetic: bin m holds the confidences in (m / M, (m + 1) / M].

    The edges are the floats nearest to m / M, so the float 0.1 belongs to (0, 0.1], as it reads.
    """
    bins: dict[int, list[tuple[Fraction, bool]]] = {}
    for row, y in zip(probs.tolist(), targets.tolist(), strict=True):
        c = max(row)
        m = next(m for m in range(n_bins) if c <= (m + 1) / n_bins or m == n_bins - 1)
        bins.setdefault(m, []).append((Fraction(c), row.index(c) == y))
    n = len(targets)
    return float(sum(abs(Fraction(sum(ok for _, ok in b), len(b)) - sum(c for c, _ in b) / len(b)) * len(b) / n
                     for b in bins.values()))


# ------------------------------------------------------------------ the definition, by hand


def test_two_bin_example_matches_the_hand_computation():
    confidence, accuracy, count = reliability_diagram(TWO_BIN_PROBS, TWO_BIN_TARGETS, n_bins=2)
    assert confidence.tolist() == pytest.approx([0.4, 0.7], rel=0, abs=1e-15)
    assert accuracy.tolist() == pytest.approx([0.5, 2 / 3], rel=0, abs=1e-15)
    assert count.tolist() == [2, 3] and count.dtype == torch.int64
    assert expected_calibration_error(TWO_BIN_PROBS, TWO_BIN_TARGETS, n_bins=2) == pytest.approx(0.06, rel=1e-12)


def test_overconfident_predictions_have_ece_equal_to_the_gap():
    """Ten predictions at confidence 0.9, six right: accuracy 0.6, so ECE = 0.9 - 0.6 = 0.3."""
    probs = torch.tensor([[0.9, 0.1]] * 10, dtype=torch.float64)
    targets = torch.tensor([0] * 6 + [1] * 4)
    assert expected_calibration_error(probs, targets) == pytest.approx(0.3, rel=1e-12)
    # a gap of 0.2 in each of two bins: 0.95 -> 3/4 right, 0.7 -> 1/2 right; ECE = 0.2 whatever the weights
    probs = torch.tensor([[0.95, 0.05]] * 4 + [[0.3, 0.7]] * 2, dtype=torch.float64)
    targets = torch.tensor([0, 0, 0, 1, 1, 0])
    assert expected_calibration_error(probs, targets, n_bins=10) == pytest.approx(0.2, rel=1e-12)
    confidence, accuracy, count = reliability_diagram(probs, targets, n_bins=10)
    assert count.tolist() == [0] * 6 + [2, 0, 0, 4]
    assert math.isnan(confidence[0]) and math.isnan(accuracy[0])  # an empty bin has no mean


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_confidence_on_a_bin_edge_belongs_to_the_lower_bin(dtype):
    probs = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.5, 0.5], [0.1, 0.9]], dtype=dtype)
    _, _, count = reliability_diagram(probs, torch.tensor([0, 0, 1, 1]), 10)
    assert count.nonzero().flatten().tolist() == [4, 5, 6, 8]  # 0.5 in (0.4, 0.5], 0.6 in (0.5, 0.6], ...


@pytest.mark.parametrize("n_bins", [1, 2, 7, 15])
def test_ece_matches_a_brute_force_reference_in_exact_arithmetic(n_bins):
    probs = random_probs(200, 4, seed=n_bins)
    probs[:5] = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0],
                              [0.2, 0.6, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]], dtype=torch.float64)  # on edges
    targets = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(0))
    assert expected_calibration_error(probs, targets, n_bins) == pytest.approx(brute_force_ece(probs, targets, n_bins),
                                                                             rel=1e-12, abs=1e-15)


def test_one_bin_ece_is_the_gap_between_accuracy_and_mean_confidence():
    probs = random_probs(300, 5, seed=1)
    targets = torch.randint(0, 5, (300,), generator=torch.Generator().manual_seed(1))
    gap = abs(float((probs.argmax(1) == targets).double().mean()) - float(probs.max(1).values.mean()))
    assert expected_calibration_error(probs, targets, 1) == pytest.approx(gap, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 400), st.integers(2, 6), st.integers(1, 20), st.integers(0, 10_000))
def test_reliability_bins_partition_the_samples_and_bound_the_ece(n, k, n_bins, seed):
    probs = random_probs(n, k, seed, temperature=0.5)
    targets = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))
    confidence, accuracy, count = reliability_diagram(probs, targets, n_bins)
    assert int(count.sum()) == n
    full = count > 0
    m = torch.arange(n_bins, dtype=torch.float64)[full]
    assert bool((confidence[full] > m / n_bins).all() and (confidence[full] <= (m + 1) / n_bins + 1e-12).all())
    assert bool(((accuracy[full] >= 0) & (accuracy[full] <= 1)).all()) and bool(confidence[~full].isnan().all())
    ece = expected_calibration_error(probs, targets, n_bins)
    overall_gap = abs(float((probs.argmax(1) == targets).double().mean()) - float(probs.max(1).values.mean()))
    assert overall_gap - 1e-12 <= ece <= 1  # |sum_m w_m (acc_m - conf_m)| <= sum_m w_m |acc_m - conf_m|


# ------------------------------------------------------------------ calibrated and miscalibrated models


def test_labels_drawn_from_the_predicted_probabilities_give_a_small_ece():
    probs = random_probs(100_000, 3, seed=0)
    targets = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(1)).squeeze(1)
    assert expected_calibration_error(probs, targets) < 0.02  # calibrated by construction; finite-N noise ~ 0.005
    sharpened = torch.softmax(probs.log() / 0.5, -1)  # the same labels, overconfident predictions
    assert expected_calibration_error(sharpened, targets) > 0.05
    confidence, accuracy, count = reliability_diagram(sharpened, targets)
    full = count > 100
    assert bool((accuracy[full] <= confidence[full] + 0.01).all())  # the bins lie under the diagonal


def test_ece_accepts_float32_softmax_outputs():
    probs, targets = TWO_BIN_PROBS.float(), TWO_BIN_TARGETS
    assert expected_calibration_error(probs, targets, 2) == pytest.approx(0.06, abs=1e-6)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("probs, targets, n_bins, error, message", [
    (torch.tensor([[2.0, 1.0], [0.5, 0.5]]), torch.tensor([0, 1]), 15, ValueError, r"row 0 sums to 3.*not logits"),
    (torch.tensor([[1.2, -0.2]]), torch.tensor([0]), 15, ValueError, r">= 0"),
    (torch.tensor([[math.nan, 1.0]]), torch.tensor([0]), 15, ValueError, r"finite"),
    (TWO_BIN_PROBS, TWO_BIN_TARGETS[:4], 15, ValueError, r"targets must have shape \(5,\).*got \(4,\)"),
    (TWO_BIN_PROBS[0], TWO_BIN_TARGETS[:1], 15, ValueError, r"probs must be a non-empty \(N, K\)"),
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 15, ValueError, r"non-empty"),
    (TWO_BIN_PROBS, TWO_BIN_TARGETS.double(), 15, TypeError, r"integer class indices"),
    (TWO_BIN_PROBS, TWO_BIN_TARGETS + 2, 15, ValueError, r"\[0, 4\).*got range \[2, 4\]"),
    (TWO_BIN_PROBS, TWO_BIN_TARGETS, 0, ValueError, r"n_bins must be an int >= 1, got 0"),
    (TWO_BIN_PROBS, TWO_BIN_TARGETS, 2.5, ValueError, r"n_bins must be an int >= 1"),
    (TWO_BIN_PROBS.tolist(), TWO_BIN_TARGETS, 15, TypeError, r"must be torch.Tensors"),
])
def test_bad_input_is_rejected_with_a_clear_message(probs, targets, n_bins, error, message):
    for fn in (expected_calibration_error, reliability_diagram):
        with pytest.raises(error, match=message):
            fn(probs, targets, n_bins)


# ------------------------------------------------------------------ the figure


def test_plot_reliability_diagram_draws_one_bar_per_full_bin_with_the_ece_in_the_legend():
    fig, ax = plt.subplots()
    try:
        out = plotting.plot_reliability_diagram(TWO_BIN_PROBS, TWO_BIN_TARGETS, 4, ax=ax, title="toy")
        assert out is ax and ax.get_title() == "toy"
        assert ax.get_xlabel().startswith("confidence") and ax.get_ylabel() == "accuracy"
        bars = ax.containers[0]
        # bins of width 1/4: (0.25, 0.5] holds 0.4, 0.4; (0.5, 0.75] holds 0.7, 0.6; (0.75, 1] holds 0.8
        assert [b.get_x() for b in bars] == [0.25, 0.5, 0.75]
        assert [b.get_height() for b in bars] == pytest.approx([0.5, 0.5, 1.0])
        assert "ECE = 0.140" in bars.get_label()  # 2/5 * |0.5 - 0.4| + 2/5 * |0.5 - 0.65| + 1/5 * |1 - 0.8|
    finally:
        plt.close(fig)
