"""Tests of the improved precision and recall of companion.metrics (Kynkäänniemi et al., 2019)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.metrics import precision_recall


def gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def brute_force_precision_recall(real: list[list[float]], fake: list[list[float]], k: int) -> tuple[float, float]:
    """The definition, point by point: radius = distance to the k-th nearest *other* point of the set."""

    def dist(a, b):
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))

    def radii(points):
        return [sorted(dist(p, q) for j, q in enumerate(points) if j != i)[k - 1] for i, p in enumerate(points)]

    def inside(p, points, r):
        return any(dist(p, q) <= r_q for q, r_q in zip(points, r, strict=True))

    r_real, r_fake = radii(real), radii(fake)
    precision = sum(inside(p, real, r_real) for p in fake) / len(fake)
    recall = sum(inside(p, fake, r_fake) for p in real) / len(real)
    return precision, recall


# ------------------------------------------------------------------ against the definition


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_precision_recall_matches_a_brute_force_double_loop(k):
    real, fake = gaussian(30, 3, 0), gaussian(13, 3, 1, shift=2.0)
    expected = brute_force_precision_recall(real.tolist(), fake.tolist(), k)
    assert precision_recall(real, fake, k) == expected
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1  # the case separates inside from outside


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3),
       st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), min_size=5, max_size=14),
       st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), min_size=5, max_size=14))
def test_precision_recall_matches_brute_force_on_a_grid_with_duplicates_and_ties(k, real, fake):
    """Integer points: exact distances, so duplicates and points exactly on a ball's edge (inside) are checked."""
    expected = brute_force_precision_recall([list(map(float, p)) for p in real], [list(map(float, p)) for p in fake], k)
    got = precision_recall(torch.tensor(real, dtype=torch.float64), torch.tensor(fake, dtype=torch.float64), k,
                           batch_size=4)
    assert got == expected


def test_precision_recall_computes_distances_in_row_batches_with_the_same_result(monkeypatch):
    real, fake = gaussian(300, 8, 0), gaussian(200, 8, 1, shift=0.3)
    whole = precision_recall(real, fake, batch_size=10_000)
    shapes = []
    cdist = torch.cdist

    def recording_cdist(a, b, *args, **kwargs):
        shapes.append((a.shape[0], b.shape[0]))
        return cdist(a, b, *args, **kwargs)

    monkeypatch.setattr(torch, "cdist", recording_cdist)
    assert precision_recall(real, fake, batch_size=64) == whole
    assert shapes and max(rows for rows, _ in shapes) == 64  # never a full N x M matrix at once
    assert sum(rows for rows, cols in shapes if cols == 300) == 300 + 200  # real radii, then fake vs real
    assert sum(rows for rows, cols in shapes if cols == 200) == 200  # fake radii


# ------------------------------------------------------------------ cases where the truth is known


def test_a_random_subset_of_the_real_set_has_precision_one_and_recall_falling_as_it_shrinks():
    real = gaussian(1000, 16, 0)
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(1))
    scores = [precision_recall(real, real[order[: int(1000 * frac)]]) for frac in (1.0, 0.5, 0.1)]
    assert [p for p, _ in scores] == [1.0, 1.0, 1.0]  # every copied point lies in its own ball
    recalls = [r for _, r in scores]
    assert recalls[0] == 1.0
    # the balls of a sparser set grow, so recall falls more slowly than the subset shrinks
    assert recalls[0] - 0.05 > recalls[1] > recalls[2] + 0.03, recalls


def test_a_generator_that_repeats_one_image_has_recall_near_zero():
    real = gaussian(1000, 16, 0)
    precision, recall = precision_recall(real, real[:1].expand(200, 16))  # a copy of one real image
    assert precision == 1.0 and recall == 1 / 1000  # its manifold is one point, the real copy
    _, recall = precision_recall(real, gaussian(1, 16, 2).expand(200, 16))  # one new image
    assert recall <= 0.05


def test_a_generator_that_covers_one_of_two_separated_blobs_has_recall_near_one_half():
    real = torch.cat([gaussian(500, 2, 0), gaussian(500, 2, 1, shift=20.0)])
    fake = gaussian(1000, 2, 2)  # the first blob only: mode collapse
    precision, recall = precision_recall(real, fake)
    assert 0.45 <= recall <= 0.5  # the second blob's half of the real points is never covered
    assert precision >= 0.95


def test_a_distribution_shifted_far_away_has_precision_and_recall_zero():
    assert precision_recall(gaussian(500, 8, 0), gaussian(500, 8, 1, shift=50.0)) == (0.0, 0.0)


def test_two_samples_of_one_distribution_score_high_precision_and_recall():
    precision, recall = precision_recall(gaussian(1000, 2, 0), gaussian(1000, 2, 1))
    assert precision >= 0.95 and recall >= 0.95


def test_precision_recall_accepts_float32_and_numpy_features():
    real, fake = gaussian(50, 4, 0), gaussian(40, 4, 1)
    expected = precision_recall(real, fake)
    assert precision_recall(real.numpy(), fake.numpy()) == expected
    got = precision_recall(real.float(), fake.float())
    assert got == pytest.approx(expected, abs=1 / 40)  # rounding to float32 may move a point across an edge


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("real, fake, kwargs, error, message", [
    (torch.zeros(10), torch.zeros(10, 4), {}, ValueError, r"real_features must be a 2-D \(N, F\).*\(10,\)"),
    (torch.zeros(10, 4), torch.zeros(10, 4, 1), {}, ValueError, r"fake_features must be a 2-D"),
    (torch.zeros(10, 4), torch.zeros(10, 5), {}, ValueError, r"same feature dimension.*\(10, 4\) and \(10, 5\)"),
    (torch.zeros(3, 4), torch.zeros(10, 4), {}, ValueError, r"real_features has 3 rows but k=3 needs at least"),
    (torch.zeros(10, 4), torch.zeros(1, 4), {"k": 1}, ValueError, r"fake_features has 1 rows.*k \+ 1 = 2"),
    (torch.zeros(10, 4), torch.zeros(10, 4), {"k": 0}, ValueError, r"k must be an int >= 1"),
    (torch.zeros(10, 4), torch.zeros(10, 4), {"k": 2.0}, ValueError, r"k must be an int >= 1"),
    (torch.zeros(10, 4), torch.zeros(10, 4), {"batch_size": 0}, ValueError, r"batch_size must be an int >= 1"),
    (torch.full((10, 4), math.nan), torch.zeros(10, 4), {}, ValueError, r"real_features has non-finite"),
    (torch.zeros(10, 4, dtype=torch.bool), torch.zeros(10, 4), {}, TypeError, r"real-valued"),
    ("features", torch.zeros(10, 4), {}, TypeError, r"real_features must be an \(N, F\) tensor"),
])
def test_precision_recall_rejects_bad_input(real, fake, kwargs, error, message):
    with pytest.raises(error, match=message):
        precision_recall(real, fake, **kwargs)
