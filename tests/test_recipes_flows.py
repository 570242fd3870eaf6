"""Tests of companion.recipes.flows: RealNVP trained by maximum likelihood on the ring (chapter "Normalizing flows")."""

from __future__ import annotations

import math

import pytest
import torch

from companion.recipes import flows as R

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(n_layers=2, hidden=16, steps=150, batch_size=128, lr=5e-3, warmup_steps=10, n_train=1000, n_test=500,
            n_eval=500, eval_every=50)


def test_a_tiny_flow_trains_its_loss_falls_and_evaluate_reports_sane_numbers():
    cfg = R.Config(**TINY)
    model = R.build_model(cfg)
    history = R.train(cfg, model, progress=False)
    nll = history["nll"]
    assert len(nll) == cfg.steps and all(math.isfinite(v) for v in nll)
    assert sum(nll[-20:]) / 20 < sum(nll[:20]) / 20 - 0.3  # the negative log-likelihood falls
    assert history["eval_step"] == [50.0, 100.0, 150.0] and history["test_nll"][-1] < history["test_nll"][0]
    out = R.evaluate(cfg, model)
    assert set(out) >= {"test_log_likelihood", "true_log_likelihood", "gap", "between_modes_fraction"}
    assert out["gap"] > 0  # no model beats the data density on 500 test points by chance here
    assert out["between_modes_fraction"] == pytest.approx(1 - out["high_quality_fraction"])
    assert R.sample(cfg, model, 7, generator=torch.Generator().manual_seed(0)).shape == (7, 2)


def test_training_is_reproducible_from_the_seed():
    cfg = R.Config(**{**TINY, "steps": 20, "eval_every": 0})
    a, b = R.build_model(cfg), R.build_model(cfg)
    ha, hb = R.train(cfg, a, progress=False), R.train(cfg, b, progress=False)
    assert ha["nll"] == hb["nll"]
    assert "test_nll" not in ha.metrics


def test_true_log_prob_is_the_mixture_density_and_the_splits_differ():
    cfg = R.Config(ring_std=0.3)  # modes overlap a little: the log-sum-exp matters
    x = R.data(cfg, "test")[:200]
    centers = torch.tensor([[2 * math.cos(2 * math.pi * k / 8), 2 * math.sin(2 * math.pi * k / 8)] for k in range(8)],
                           dtype=torch.float64)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(8, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(centers, 0.3), 1))
    torch.testing.assert_close(R.true_log_prob(cfg, x), mix.log_prob(x.double()), rtol=0, atol=1e-6)
    assert not torch.equal(R.data(cfg, "train")[:5], R.data(cfg, "val")[:5])
    torch.testing.assert_close(R.data(cfg, "test"), R.data(R.Config(ring_std=0.3, seed=5), "test"))  # seed-free


def test_ring_entropy_matches_a_monte_carlo_estimate_and_the_checker(capsys):
    cfg = R.Config(ring_std=0.1, n_test=20_000)
    x = R.data(cfg, "test")
    mc = -float(R.true_log_prob(cfg, x).mean())
    se = float(R.true_log_prob(cfg, x).std()) / math.sqrt(x.shape[0])
    assert abs(mc - R.ring_entropy(8, 0.1)) < 4 * se + 1e-3
    assert R.check_ring_entropy(lambda k, s: math.log(k) + math.log(2 * math.pi * math.e * s**2))
    assert not R.check_ring_entropy(lambda k, s: math.log(2 * math.pi * math.e * s**2))  # one mode
    assert not R.check_ring_entropy(lambda k, s: math.log(k) + 0.5 * math.log(2 * math.pi * math.e * s**2))  # 1-D
    out = capsys.readouterr().out
    assert out.count("Correct") == 1 and out.count("Not yet") == 2 and "adds log K" in out


def test_baselines_kde_beats_one_gaussian_and_kde_log_prob_integrates_to_one():
    cfg = R.Config(n_train=2000, n_test=1000)
    out = R.baselines(cfg)
    assert out["kde"] > out["gaussian"] + 1.0
    assert 0.01 < out["kde_bandwidth"] < 0.1  # near the per-mode sigma times n^(-1/6), not the data scale
    h = 0.05
    axis = torch.arange(-3, 3, h, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    mass = float(R.kde_log_prob(grid, R.data(cfg)[:300], 0.2).exp().sum() * h * h)
    assert mass == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_layers": 0}, "n_layers must be an int >= 1, got 0"),
    ({"hidden": 2.5}, "hidden must be an int >= 1"),
    ({"steps": -1}, "steps must be an int >= 0, got -1"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"ring_std": -0.1}, "ring_std must be > 0"),
    ({"lr_min": 1.0}, r"lr_min must be in \[0, lr\]"),
    ({"batch_size": 512, "n_train": 100}, r"batch_size \(512\) cannot exceed n_train \(100\)"),
])
def test_bad_config_raises_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        R.Config(**kwargs)


def test_bad_calls_raise_clear_errors():
    cfg = R.Config(**TINY)
    with pytest.raises(ValueError, match="split must be one of"):
        R.data(cfg, "validation")
    with pytest.raises(TypeError, match="2-D companion.flows.RealNVP"):
        R.train(cfg, torch.nn.Linear(2, 2), progress=False)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2\)"):
        R.true_log_prob(cfg, torch.zeros(3))
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        R.kde_log_prob(torch.zeros(2, 2), torch.zeros(3, 2), 0.0)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        R.sample(cfg, R.build_model(cfg), 0)
