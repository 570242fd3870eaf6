"""companion.classifiers and the Gaussian fits of companion.divergences."""

from __future__ import annotations

import math

import pytest
import torch

from companion.classifiers import GaussianClassifier, accuracy, two_moons_and_blob
from companion.divergences import check_kl_answer, fit_gaussian_to_density
from companion.recipes.classifier import fit_logistic_regression


def test_gaussian_classifier_recovers_the_generating_parameters():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4000, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.5], dtype=torch.float64)
    x1 = torch.randn(2000, 2, generator=g, dtype=torch.float64) + 3.0
    x, y = torch.cat([x0, x1]), torch.cat([torch.zeros(4000), torch.ones(2000)]).long()
    clf = GaussianClassifier(2).fit(x, y)
    torch.testing.assert_close(clf.log_prior.exp(), torch.tensor([2 / 3, 1 / 3]), atol=1e-6, rtol=0)
    torch.testing.assert_close(clf.means[1], torch.tensor([3.0, 3.0], dtype=torch.float64), atol=0.06, rtol=0)
    torch.testing.assert_close(clf.covs[0].diag(), torch.tensor([1.0, 0.25], dtype=torch.float64), atol=0.06, rtol=0)


def test_bayes_rule_posterior_sums_to_one_and_matches_the_joint():
    x, y = two_moons_and_blob(400, torch.Generator().manual_seed(1))
    clf = GaussianClassifier(2).fit(x, y)
    post = clf.predict_proba(x)
    torch.testing.assert_close(post.sum(-1), torch.ones(len(x)))
    joint = clf.log_joint(x).exp()
    torch.testing.assert_close(post, joint / joint.sum(-1, keepdim=True))
    torch.testing.assert_close(clf.log_likelihood(x), joint.sum(-1).log())


def test_samples_of_the_generative_classifier_follow_its_fitted_gaussians():
    x, y = two_moons_and_blob(1000, torch.Generator().manual_seed(2))
    clf = GaussianClassifier(2).fit(x, y)
    xs, ys = clf.sample(20_000, torch.Generator().manual_seed(3))
    assert abs((ys == 1).float().mean().item() - 0.5) < 0.02
    torch.testing.assert_close(xs[ys == 1].mean(0), clf.means[1], atol=0.03, rtol=0)


def test_both_classifiers_beat_chance_on_held_out_points():
    g = torch.Generator().manual_seed(4)
    x, y = two_moons_and_blob(600, g)
    xt, yt = two_moons_and_blob(600, g)
    gen = GaussianClassifier(2).fit(x, y)
    torch.manual_seed(0)
    disc = fit_logistic_regression(x, y, 2, steps=300)
    assert accuracy(gen.predict_proba(xt), yt) > 0.85
    assert accuracy(disc.predict_proba(xt), yt) > 0.8


def test_classifier_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"y must have shape \(5,\)"):
        GaussianClassifier(2).fit(torch.zeros(5, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 points"):
        GaussianClassifier(2).fit(torch.randn(5, 2), torch.tensor([0, 0, 0, 0, 1]))


def _mixture(x):
    n = torch.distributions.Normal
    return 0.5 * n(-2.0, 0.6).log_prob(x).exp() + 0.5 * n(2.0, 0.6).log_prob(x).exp()


def test_forward_kl_fit_is_moment_matching():
    x = torch.linspace(-8, 8, 801, dtype=torch.float64)
    p = _mixture(x)
    mu, sigma = fit_gaussian_to_density(x, p, "forward", mu0=0.5, log_sigma0=0.0, steps=800)
    dx = x[1] - x[0]
    mean = (x * p).sum() * dx
    var = ((x - mean) ** 2 * p).sum() * dx
    assert mu == pytest.approx(mean.item(), abs=1e-2)
    assert sigma == pytest.approx(math.sqrt(var.item()), abs=1e-2)  # sqrt(4 + 0.36) = 2.088


def test_reverse_kl_fit_seeks_the_nearest_mode():
    x = torch.linspace(-8, 8, 801, dtype=torch.float64)
    p = _mixture(x)
    mu, sigma = fit_gaussian_to_density(x, p, "reverse", mu0=1.0, log_sigma0=0.0, steps=800)
    assert mu == pytest.approx(2.0, abs=0.05) and sigma == pytest.approx(0.6, abs=0.05)
    with pytest.raises(ValueError, match="unknown direction"):
        fit_gaussian_to_density(x, p, "sideways")


def test_check_kl_answer_accepts_the_truth_and_rejects_log2(capsys):
    p, q = [0.5, 0.5], [0.25, 0.75]
    truth = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert check_kl_answer(p, q, truth)
    assert not check_kl_answer(p, q, truth / math.log(2))  # the answer in bits
    assert "Not yet" in capsys.readouterr().out
