"""Tests of companion.recipes.flow_matching: the U-Net velocity field trained on MNIST (chapter "Flow matching")."""

from __future__ import annotations

import math

import pytest
import torch

from companion import runs
from companion.recipes import flow_matching as R

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(channels=8, steps=30, batch_size=16, warmup_steps=5, sample_steps=3)


def test_a_tiny_run_lowers_the_loss_and_samples_images_in_the_unit_range(mnist):
    cfg = R.Config(**{**TINY, "steps": 60, "lr": 3e-3})
    model = R.build_model(cfg)
    history = R.train(cfg, model, progress=False)
    loss = history["loss"]
    assert len(loss) == cfg.steps and all(math.isfinite(v) for v in loss)
    # the velocity of noise -> data has mean squared value E|x1 - x0|^2 per pixel >= 1 at the start
    assert sum(loss[-10:]) / 10 < 0.8 * sum(loss[:10]) / 10
    x = R.sample(cfg, model, 5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert not model.training
    assert R.evaluate(cfg, model) == {"network_evaluations_per_sample": 3.0}


def test_training_and_sampling_are_reproducible_from_the_seeds(mnist):
    cfg = R.Config(**{**TINY, "steps": 5})
    a, b = R.build_model(cfg), R.build_model(cfg)
    assert R.train(cfg, a, progress=False)["loss"] == R.train(cfg, b, progress=False)["loss"]
    xa = R.sample(cfg, a, 3, generator=torch.Generator().manual_seed(1))
    xb = R.sample(cfg, b, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(xa, xb)


def test_the_moving_average_replaces_the_weights_at_the_end(mnist):
    cfg = R.Config(**{**TINY, "steps": 4, "ema": 0.9})
    model = R.build_model(cfg)
    start = [p.detach().clone() for p in model.parameters()]
    R.train(cfg, model, progress=False)
    live = R.Config(**{**TINY, "steps": 4, "ema": 0.0})
    model_live = R.build_model(live)
    R.train(live, model_live, progress=False)
    # the same batches and updates: the average lies strictly between the start and the live weights
    moved = [(p - s).abs().sum() for p, s in zip(model.parameters(), start, strict=True)]
    moved_live = [(p - s).abs().sum() for p, s in zip(model_live.parameters(), start, strict=True)]
    assert sum(moved) < sum(moved_live)


def test_a_conditional_model_draws_the_requested_labels_with_guidance(mnist):
    cfg = R.Config(**{**TINY, "steps": 3, "conditional": True, "guidance": 3.0, "sampler": "heun"})
    model = R.build_model(cfg)
    R.train(cfg, model, progress=False)
    assert model.null_label == 10
    x = R.sample(cfg, model, 4, generator=torch.Generator().manual_seed(0), labels=torch.tensor([3, 3, 7, 7]))
    assert x.shape == (4, 1, 28, 28)
    # Heun: two evaluations per step; guidance: two velocities per evaluation
    assert R.evaluate(cfg, model)["network_evaluations_per_sample"] == 12.0
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        R.sample(cfg, model, 4, labels=torch.tensor([1, 2]))


def test_a_self_conditioned_model_learns_the_clusters_of_the_training_images_and_draws_them_by_share(mnist):
    from companion.clustering import kmeans
    from companion.data import load_mnist

    cfg = R.Config(**{**TINY, "steps": 2, "self_condition": 5})
    model = R.build_model(cfg)
    assert model.n_classes == 5 and model.null_label == 5
    R.train(cfg, model, progress=False)
    ids = kmeans(load_mnist("train")[0] * 2 - 1, 5, seed=cfg.seed)  # the pixels the recipe clusters
    expected = torch.bincount(ids, minlength=5).float() / ids.numel()
    torch.testing.assert_close(model.cluster_shares, expected)
    assert bool((expected > 0.05).all())
    # the shares are part of the checkpoint: a rebuilt network gets them back from the state dict
    clone = R.build_model(cfg)
    assert not torch.equal(clone.cluster_shares, expected)
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone.cluster_shares, expected)
    # clusters are drawn with their shares (a large draw: within 0.02 of each share)
    draws = R.sample_clusters(model, 20_000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.bincount(draws, minlength=5) / 20_000, expected, atol=0.02, rtol=0)
    x = R.sample(cfg, model, 4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 1, 28, 28) and torch.equal(x, R.sample(cfg, model, 4, torch.Generator().manual_seed(0)))
    assert R.evaluate(cfg, model)["network_evaluations_per_sample"] == 6.0  # guided: two velocities per step
    with pytest.raises(ValueError, match="unconditional: labels must be None"):
        R.sample(cfg, model, 2, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="needs a self-conditioned network"):
        R.sample_clusters(R.build_model(R.Config(**TINY)), 3)


def test_an_unconditional_model_refuses_labels():
    cfg = R.Config(**TINY)
    with pytest.raises(ValueError, match="unconditional: labels must be None"):
        R.sample(cfg, R.build_model(cfg), 2, labels=torch.tensor([0, 1]))


@pytest.mark.parametrize("field, value, message", [
    ("channels", 12, "multiple of 8"),
    ("steps", -1, "steps must be an int >= 0"),
    ("sample_steps", 0, "sample_steps must be an int >= 1"),
    ("sampler", "rk4", "sampler must be one of"),
    ("guidance", -1.0, "guidance must be >= 0"),
    ("ema", 1.0, r"ema must be in \[0, 1\)"),
    ("p_uncond", 1.0, r"p_uncond must be in \[0, 1\)"),
    ("lr", 0.0, "lr must be > 0"),
    ("conditional", 1, "conditional must be True or False"),
    ("self_condition", 1, "K >= 2"),
    ("self_condition", True, "K >= 2"),
])
def test_bad_config_values_get_clear_errors(field, value, message):
    with pytest.raises(ValueError, match=message):
        R.Config(**{field: value})


def test_self_conditioning_is_for_unconditional_models():
    with pytest.raises(ValueError, match="self_condition is for unconditional models"):
        R.Config(conditional=True, self_condition=10)


def test_the_model_names_fix_conditioning_and_sample_takes_steps_sampler_and_guidance():
    assert runs.make_config("flow").conditional is False and runs.make_config("cflow").conditional is True
    # the command line's flow is guided towards k-means clusters (no labels); cflow uses the labels
    assert runs.make_config("flow").self_condition == 100 and runs.make_config("cflow").self_condition == 0
    assert runs.make_config("flow", {"self_condition": 0}).self_condition == 0
    with pytest.raises(runs.RunError, match="conditional is fixed to False"):
        runs.make_config("flow", {"conditional": True})
    from companion.cli import build_parser

    args = build_parser().parse_args(["sample", "cflow", "--steps", "7", "--sampler", "heun", "--guidance", "1.5"])
    assert (args.cfg_sample_steps, args.cfg_sampler, args.cfg_guidance) == (7, "heun", 1.5)
