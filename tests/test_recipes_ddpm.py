"""Tests of companion.recipes.ddpm: the U-Net noise predictor trained on MNIST."""

from __future__ import annotations

import math

import pytest
import torch

from companion import runs
from companion.diffusion import alpha_bar_from_betas
from companion.recipes import ddpm as R

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(channels=8, T=50, steps=40, batch_size=16, warmup_steps=5, sample_steps=4)


def test_a_tiny_run_lowers_the_loss_and_samples_images_in_the_unit_range(mnist):
    cfg = R.Config(**{**TINY, "lr": 3e-3})
    model = R.build_model(cfg)
    loss = R.train(cfg, model, progress=False)["loss"]
    assert len(loss) == cfg.steps and all(math.isfinite(v) for v in loss)
    assert sum(loss[-10:]) / 10 < 0.8 * sum(loss[:10]) / 10  # the noise MSE starts near 1
    for sampler in ("ddim", "ddpm"):
        c = R.Config(**{**TINY, "sampler": sampler})
        x = R.sample(c, model, 3, generator=torch.Generator().manual_seed(0))
        assert x.shape == (3, 1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert R.evaluate(cfg, model) == {"network_evaluations_per_sample": 4.0}
    assert R.evaluate(R.Config(**{**TINY, "sampler": "ddpm"}), model) == {"network_evaluations_per_sample": 50.0}


def test_ddim_with_eta_zero_is_deterministic_given_the_starting_noise(mnist):
    cfg = R.Config(**{**TINY, "steps": 0})
    model = R.build_model(cfg)
    a = R.sample(cfg, model, 2, generator=torch.Generator().manual_seed(3))
    b = R.sample(cfg, model, 2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_the_schedules_are_the_papers():
    lin, cos = R.betas_of(R.Config(T=1000)), R.betas_of(R.Config(T=1000, schedule="cosine"))
    assert lin[0] == pytest.approx(1e-4) and lin[-1] == pytest.approx(0.02)
    # the cosine schedule keeps more signal half way: alpha_bar(T/2) is larger
    assert alpha_bar_from_betas(cos)[500] > alpha_bar_from_betas(lin)[500]


@pytest.mark.parametrize("field, value, message", [
    ("schedule", "quadratic", "schedule must be 'linear' or 'cosine'"),
    ("sampler", "euler", "sampler must be 'ddim' or 'ddpm'"),
    ("sample_steps", 2000, r"sample_steps must be <= T = 1000"),
    ("T", 0, "T must be an int >= 1"),
    ("eta", -0.5, "eta must be >= 0"),
    ("p_uncond", 1.0, r"p_uncond must be in \[0, 1\)"),
    ("guidance", -1.0, "guidance must be >= 0"),
    ("channels", 20, "multiple of 8"),
    ("clip_x0", 1, "clip_x0 must be True or False"),
    ("prediction", "x0", "prediction must be .eps. .the noise. or .v."),
])
def test_bad_config_values_get_clear_errors(field, value, message):
    with pytest.raises(ValueError, match=message):
        R.Config(**{field: value})


def test_the_model_name_and_its_sampling_options():
    assert isinstance(runs.make_config("ddpm"), R.Config)
    from companion.cli import build_parser

    args = build_parser().parse_args(["sample", "ddpm", "--steps", "20", "--sampler", "ddpm"])
    assert (args.cfg_sample_steps, args.cfg_sampler) == (20, "ddpm")


def test_a_conditional_model_samples_the_requested_digits_with_guidance(mnist):
    cfg = R.Config(**{**TINY, "conditional": True, "p_uncond": 0.2, "guidance": 2.0})
    model = R.build_model(cfg)
    assert model.null_label == 10
    loss = R.train(cfg, model, progress=False)["loss"]
    assert all(math.isfinite(v) for v in loss)
    x = R.sample(cfg, model, 4, generator=torch.Generator().manual_seed(0), labels=torch.tensor([0, 1, 2, 3]))
    assert x.shape == (4, 1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert R.evaluate(cfg, model) == {"network_evaluations_per_sample": 8.0}  # two evaluations per guided step
    with pytest.raises(ValueError, match="unconditional: labels must be None"):
        R.sample(R.Config(**TINY), R.build_model(R.Config(**TINY)), 2, labels=torch.tensor([0, 1]))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_clip_x0_reaches_the_sampler(sampler, monkeypatch):
    seen = {}

    def fake(*args, clip_x0=False, **kwargs):
        seen["clip_x0"] = clip_x0
        return torch.zeros(2, 1, 28, 28)

    monkeypatch.setattr(R, f"{sampler}_sample", fake)
    for clip in (False, True):
        cfg = R.Config(channels=8, T=10, sample_steps=2, sampler=sampler, clip_x0=clip)
        R.sample(cfg, R.build_model(cfg), 2)
        assert seen["clip_x0"] is clip
    from companion.cli import build_parser

    assert build_parser().parse_args(["train", "ddpm", "--clip-x0"]).cfg_clip_x0 is True


def test_a_self_conditioned_model_draws_its_clusters_and_is_guided_towards_them(mnist):
    from companion.diffusion import ddim_sample, guided_eps

    cfg = R.Config(**{**TINY, "self_condition": 4, "guidance": 2.0})
    model = R.build_model(cfg)
    R.train(cfg, model, progress=False)
    assert model.n_classes == 4 and abs(float(model.cluster_shares.sum()) - 1) < 1e-6
    x = R.sample(cfg, model, 3, generator=torch.Generator().manual_seed(0))
    # the same draw by hand: clusters with their shares, then DDIM on the guided noise prediction
    gen = torch.Generator().manual_seed(0)
    clusters = torch.multinomial(model.cluster_shares, 3, replacement=True, generator=gen)
    slow = ddim_sample(lambda x, t: guided_eps(model, x, t, clusters, 2.0, model.null_label), (3, 1, 28, 28),
                       alpha_bar_from_betas(R.betas_of(cfg)), cfg.sample_steps, generator=gen)
    torch.testing.assert_close(x, ((slow + 1) / 2).clamp(0, 1), atol=1e-5, rtol=1e-5)
    assert R.evaluate(cfg, model) == {"network_evaluations_per_sample": 8.0}
    with pytest.raises(ValueError, match="self_condition is for unconditional models"):
        R.Config(conditional=True, self_condition=4)


@pytest.mark.parametrize("w", [0.0, 1.0])
def test_guidance_zero_and_one_take_one_network_call_and_equal_the_guided_formula(w):
    from companion.diffusion import ddim_sample, guided_eps

    cfg = R.Config(**{**TINY, "conditional": True, "guidance": w})
    model = R.build_model(cfg).eval()
    labels = torch.tensor([3, 7])
    fast = R.sample(cfg, model, 2, generator=torch.Generator().manual_seed(0), labels=labels)
    alpha_bar = alpha_bar_from_betas(R.betas_of(cfg))
    slow = ddim_sample(lambda x, t: guided_eps(model, x, t, labels, w, model.null_label), (2, 1, 28, 28),
                       alpha_bar, cfg.sample_steps, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fast, ((slow + 1) / 2).clamp(0, 1), atol=1e-5, rtol=1e-5)
    assert R.evaluate(cfg, model) == {"network_evaluations_per_sample": 4.0}


def test_a_v_predicting_run_trains_on_v_and_samples_through_its_noise(mnist, monkeypatch):
    """prediction="v": the loss is v_loss (a tiny run lowers it), and the samplers receive eps_from_v of the
    network's output, guided or not."""
    from companion import v_prediction

    cfg = R.Config(**{**TINY, "lr": 3e-3, "prediction": "v", "conditional": True, "guidance": 2.0})
    model = R.build_model(cfg)
    loss = R.train(cfg, model, progress=False)["loss"]
    assert sum(loss[-10:]) / 10 < 0.8 * sum(loss[:10]) / 10
    seen = {}

    def fake(eps_model, shape, alpha_bar, steps, eta, generator=None, clip_x0=False):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        t = torch.full((shape[0],), 30)
        seen["eps"], seen["x"], seen["ab"] = eps_model(x, t), x, alpha_bar[30]
        return x.clamp(-1, 1)

    monkeypatch.setattr(R, "ddim_sample", fake)
    R.sample(cfg, model.eval(), 4, labels=torch.arange(4))
    x, labels = seen["x"], torch.arange(4)
    with torch.no_grad():
        both = model(torch.cat([x, x]), torch.full((8,), 30), torch.cat([labels, torch.full_like(labels, 10)]))
    v_guided = both[4:] + 2.0 * (both[:4] - both[4:])
    want = v_prediction.eps_from_v(v_guided, x, seen["ab"])
    torch.testing.assert_close(seen["eps"], want, rtol=1e-5, atol=1e-5)


def test_the_command_line_offers_the_prediction():
    from companion.cli import build_parser

    assert build_parser().parse_args(["train", "ddpm", "--prediction", "v"]).cfg_prediction == "v"
