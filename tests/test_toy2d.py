"""Tests of companion.toy2d: the ring of Gaussians and the mode-coverage metric."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.toy2d import mode_coverage, ring_centers, sample_ring


def test_ring_centers_lie_on_the_circle_at_equal_angles():
    c = ring_centers(8, radius=2.0)
    assert c.shape == (8, 2)
    torch.testing.assert_close(c.norm(dim=1), torch.full((8,), 2.0))
    angles = torch.atan2(c[:, 1], c[:, 0]) % (2 * math.pi)
    torch.testing.assert_close(angles, 2 * math.pi * torch.arange(8) / 8, atol=1e-5, rtol=0)


def test_sample_ring_draws_each_mode_equally_often_with_the_given_spread():
    gen = torch.Generator().manual_seed(0)
    x, y = sample_ring(40_000, n_modes=8, radius=2.0, std=0.05, generator=gen, return_labels=True)
    assert x.shape == (40_000, 2) and y.shape == (40_000,)
    freq = torch.bincount(y, minlength=8).double() / len(y)
    assert (freq - 1 / 8).abs().max() < 0.01  # sd of each frequency is ~0.0017
    offset = x - ring_centers(8, 2.0)[y]
    # each coordinate of the offset is N(0, 0.05^2)
    assert abs(offset.std().item() - 0.05) < 0.001
    assert offset.mean(0).abs().max() < 0.002


def test_sample_ring_is_reproducible_with_a_generator():
    a = sample_ring(100, generator=torch.Generator().manual_seed(3))
    b = sample_ring(100, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_true_samples_capture_every_mode_with_the_chi2_fraction_of_high_quality_samples():
    gen = torch.Generator().manual_seed(1)
    std = 0.05
    x = sample_ring(20_000, std=std, generator=gen)
    cov = mode_coverage(x, ring_centers(), std)
    assert cov.modes_captured == 8
    # ||offset||^2 / std^2 ~ chi2(2): P(||offset|| <= 3 std) = 1 - exp(-9/2)
    assert abs(cov.high_quality_fraction - (1 - math.exp(-4.5))) < 0.005
    assert cov.kl_to_uniform < 0.01


def test_collapsed_samples_capture_one_mode_with_kl_log_k():
    centers = ring_centers()
    x = centers[3] + 0.01 * torch.randn(500, 2, generator=torch.Generator().manual_seed(2))
    cov = mode_coverage(x, centers, 0.05)
    assert cov.modes_captured == 1
    assert cov.counts[3] == 500
    assert cov.kl_to_uniform == pytest.approx(math.log(8), abs=1e-9)


def test_samples_between_modes_are_not_high_quality():
    x = torch.zeros(100, 2)  # the centre of the ring, 2 away from every mode
    cov = mode_coverage(x, ring_centers(), 0.05)
    assert cov.modes_captured == 0 and cov.high_quality_fraction == 0.0
    assert math.isnan(cov.kl_to_uniform)


def test_a_mode_needs_min_fraction_of_the_samples_to_count():
    centers = ring_centers()
    x = torch.cat([centers[0].repeat(95, 1), centers[1].repeat(5, 1)])
    assert mode_coverage(x, centers, 0.05, min_fraction=0.05).modes_captured == 2
    assert mode_coverage(x, centers, 0.05, min_fraction=0.06).modes_captured == 1


def test_label_accuracy_counts_samples_on_their_requested_mode():
    gen = torch.Generator().manual_seed(4)
    x, y = sample_ring(1000, std=0.05, generator=gen, return_labels=True)
    assert mode_coverage(x, ring_centers(), 0.05, labels=y).label_accuracy == pytest.approx(1.0)
    shifted = (y + 1) % 8
    assert mode_coverage(x, ring_centers(), 0.05, labels=shifted).label_accuracy == pytest.approx(0.0)


@pytest.mark.parametrize(
    "samples, match",
    [(torch.zeros(10, 3), "shape"), (torch.zeros(10), "shape"), (torch.zeros(0, 2), "empty"),
     (torch.full((4, 2), float("nan")), "NaN")],
)
def test_mode_coverage_rejects_bad_samples(samples, match):
    with pytest.raises(ValueError, match=match):
        mode_coverage(samples, ring_centers(), 0.05)


def test_mode_coverage_rejects_labels_of_the_wrong_length():
    with pytest.raises(ValueError, match="labels"):
        mode_coverage(torch.zeros(10, 2), ring_centers(), 0.05, labels=torch.zeros(9, dtype=torch.long))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 300), st.integers(1, 12), st.floats(0.01, 1.0), st.integers(0, 2**31 - 1))
def test_coverage_counts_are_consistent(n, k, std, seed):
    gen = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(n, 2, generator=gen)
    cov = mode_coverage(x, ring_centers(k), std)
    assert 0 <= cov.modes_captured <= k
    assert int(cov.counts.sum()) == round(cov.high_quality_fraction * n)
    assert cov.modes_captured == int((cov.counts >= 0.008 * n).sum())
    if cov.counts.sum() > 0:
        assert -1e-12 <= cov.kl_to_uniform <= math.log(k) + 1e-9
