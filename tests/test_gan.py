"""Tests of companion.gan (theory, losses, penalties, models, checkers) and the GAN recipe."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from companion import diffaugment, gan, gan_networks
from companion.divergences import js_divergence
from companion.recipes import gan as recipe
from companion.recipes import gan_variants

LOG4 = math.log(4.0)


def _random_pair(seed, n=16, k=7, zeros=False):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, k, generator=g, dtype=torch.float64)
    q = torch.rand(n, k, generator=g, dtype=torch.float64)
    if zeros:  # knock out entries so that the supports differ
        p = p * (torch.rand(n, k, generator=g, dtype=torch.float64) > 0.3)
        q = q * (torch.rand(n, k, generator=g, dtype=torch.float64) > 0.3)
        p[:, 0] += 0.1
        q[:, 1] += 0.1
    return p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)


# ------------------------------------------------------------------------- theory


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.booleans())
def test_value_at_optimal_discriminator_is_2jsd_minus_log4(seed, zeros):
    p_data, p_g = _random_pair(seed, zeros=zeros)
    v = gan.gan_value(gan.optimal_discriminator(p_data, p_g), p_data, p_g)
    torch.testing.assert_close(v, 2 * js_divergence(p_data, p_g) - LOG4, atol=1e-6, rtol=0)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_optimal_discriminator_beats_every_perturbed_discriminator(seed):
    p_data, p_g = _random_pair(seed)
    d_star = gan.optimal_discriminator(p_data, p_g)
    best = gan.gan_value(d_star, p_data, p_g)
    g = torch.Generator().manual_seed(seed + 1)
    for scale in (1e-3, 1e-2, 0.2):
        logit = torch.logit(d_star) + scale * torch.randn(d_star.shape, generator=g, dtype=torch.float64)
        assert (gan.gan_value(torch.sigmoid(logit), p_data, p_g) <= best + 1e-12).all()


def test_optimal_discriminator_is_the_formula_and_half_where_both_vanish():
    p_data = torch.tensor([0.5, 0.5, 0.0, 0.0])
    p_g = torch.tensor([0.25, 0.0, 0.75, 0.0])
    torch.testing.assert_close(gan.optimal_discriminator(p_data, p_g), torch.tensor([2 / 3, 1.0, 0.0, 0.5]))


def test_value_is_minus_log4_when_the_generator_matches_the_data():
    p, _ = _random_pair(0)
    d_star = gan.optimal_discriminator(p, p)
    torch.testing.assert_close(d_star, torch.full_like(p, 0.5))
    torch.testing.assert_close(gan.gan_value(d_star, p, p), torch.full((p.shape[0],), -LOG4, dtype=torch.float64))


def test_value_is_zero_for_disjoint_supports():
    p_data = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64)
    p_g = torch.tensor([0.0, 0.0, 0.3, 0.7], dtype=torch.float64)
    v = gan.gan_value(gan.optimal_discriminator(p_data, p_g), p_data, p_g)
    assert v.item() == pytest.approx(0.0, abs=1e-12)  # JSD = log 2 is the maximum


def test_sympy_pointwise_maximiser_is_a_over_a_plus_b():
    sp = pytest.importorskip("sympy")
    a, b, y = sp.symbols("a b y", positive=True)
    f = a * sp.log(y) + b * sp.log(1 - y)
    (y_star,) = sp.solve(sp.diff(f, y), y)
    assert sp.simplify(y_star - a / (a + b)) == 0
    assert sp.simplify(sp.diff(f, y, 2).subs(y, y_star) + (a + b) ** 3 / (a * b)) == 0  # < 0: a maximum


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_gan_value_rejects_d_outside_the_unit_interval(bad):
    p, q = _random_pair(1, n=1, k=4)
    d = torch.full_like(p, 0.5)
    d[0, 2] = bad
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        gan.gan_value(d, p, q)


def test_gan_value_rejects_d_at_an_endpoint_that_costs_infinity():
    p, q = _random_pair(2, n=1, k=4)
    with pytest.raises(ValueError, match=r"\(0, 1\).*d = 0"):
        gan.gan_value(torch.zeros_like(p), p, q)
    with pytest.raises(ValueError, match=r"\(0, 1\).*d = 1"):
        gan.gan_value(torch.ones_like(p), p, q)


def test_gan_value_and_optimal_discriminator_reject_mismatched_shapes():
    p, q = _random_pair(3, n=2, k=5)
    with pytest.raises(ValueError, match="shape"):
        gan.gan_value(torch.full((2, 4), 0.5, dtype=torch.float64), p, q)
    with pytest.raises(ValueError, match="shape"):
        gan.optimal_discriminator(p, q[:, :4] / q[:, :4].sum(-1, keepdim=True))
    with pytest.raises(ValueError, match="sum to 1"):
        gan.gan_value(torch.full_like(p, 0.5), p * 2, q)


# ------------------------------------------------------------------------- losses


def _naive_log_sigmoid(x):
    return torch.log(torch.sigmoid(x))


def test_discriminator_loss_is_minus_the_value_estimate():
    g = torch.Generator().manual_seed(0)
    r, f = torch.randn(50, generator=g) * 3, torch.randn(30, generator=g) * 3
    expected = -(_naive_log_sigmoid(r).mean() + torch.log(1 - torch.sigmoid(f)).mean())
    torch.testing.assert_close(gan.discriminator_loss(r, f), expected, atol=1e-5, rtol=1e-5)
    # (B, 1) logits give the same loss
    torch.testing.assert_close(gan.discriminator_loss(r[:, None], f[:, None]), expected, atol=1e-5, rtol=1e-5)


def test_discriminator_loss_with_label_smoothing_is_bce_with_target():
    r, f = torch.randn(20), torch.randn(20)
    bce = nn.functional.binary_cross_entropy_with_logits
    expected = bce(r, torch.full_like(r, 0.9)) + bce(f, torch.zeros_like(f))
    torch.testing.assert_close(gan.discriminator_loss(r, f, real_target=0.9), expected)


def test_generator_losses_are_log_one_minus_d_and_minus_log_d():
    f = torch.randn(40, generator=torch.Generator().manual_seed(1)) * 2
    d = torch.sigmoid(f)
    torch.testing.assert_close(gan.generator_loss(f, "minimax"), torch.log(1 - d).mean())
    torch.testing.assert_close(gan.generator_loss(f, "non_saturating"), -torch.log(d).mean())


@pytest.mark.parametrize("logit", [-2.0, -5.0, -10.0, -20.0, -50.0])
def test_minimax_gradient_vanishes_while_non_saturating_stays_near_one_as_d_goes_to_zero(logit):
    d = 1 / (1 + math.exp(-logit))
    grads = {}
    for kind in ("minimax", "non_saturating"):
        x = torch.tensor([logit], dtype=torch.float64, requires_grad=True)
        gan.generator_loss(x, kind).backward()
        grads[kind] = x.grad.item()
    # derived: d/dl log(1 - sigmoid(l)) = -D, d/dl -log sigmoid(l) = -(1 - D)
    assert grads["minimax"] == pytest.approx(-d, rel=1e-9)
    assert grads["non_saturating"] == pytest.approx(-(1 - d), rel=1e-9)
    assert abs(grads["minimax"] / grads["non_saturating"]) == pytest.approx(d / (1 - d), rel=1e-9)
    if logit <= -10:
        assert abs(grads["minimax"]) < 1e-4 < 0.999 < abs(grads["non_saturating"])


def test_both_generator_losses_push_d_of_fakes_up():
    for kind in ("minimax", "non_saturating"):
        x = torch.randn(10, requires_grad=True)
        gan.generator_loss(x, kind).backward()
        assert (x.grad < 0).all()  # gradient descent increases the logits


_LOSSES = {
    "discriminator": lambda r, f: gan.discriminator_loss(r, f),
    "discriminator_smoothed": lambda r, f: gan.discriminator_loss(r, f, real_target=0.9),
    "generator_ns": lambda r, f: gan.generator_loss(f, "non_saturating"),
    "generator_minimax": lambda r, f: gan.generator_loss(f, "minimax"),
    "wasserstein": lambda r, f: sum(gan.wasserstein_losses(r, f)),
    "lsgan": lambda r, f: sum(gan.lsgan_losses(r, f)),
    "hinge": lambda r, f: sum(gan.hinge_losses(r, f)),
}


@pytest.mark.parametrize("name", sorted(_LOSSES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_losses_have_finite_values_and_gradients_at_logits_of_plus_minus_100(name, dtype):
    r = torch.tensor([-100.0, 100.0, 0.0], dtype=dtype, requires_grad=True)
    f = torch.tensor([100.0, -100.0, 0.0], dtype=dtype, requires_grad=True)
    loss = _LOSSES[name](r, f)
    loss.backward()
    assert torch.isfinite(loss)
    assert f.grad is not None
    assert all(torch.isfinite(t.grad).all() for t in (r, f) if t.grad is not None)


def test_naive_log_sigmoid_is_what_the_stable_losses_avoid():
    assert torch.isinf(_naive_log_sigmoid(torch.tensor(-200.0)))  # float32 sigmoid underflows to 0
    assert torch.isfinite(gan.generator_loss(torch.tensor([-200.0]), "non_saturating"))


def test_wasserstein_lsgan_and_hinge_losses_on_a_hand_example():
    r, f = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 3.0])
    critic, gen = gan.wasserstein_losses(r, f)
    assert critic.item() == pytest.approx(1.0 - 1.0) and gen.item() == pytest.approx(-1.0)
    d_loss, g_loss = gan.lsgan_losses(r, f)
    assert d_loss.item() == pytest.approx(0.5 * (1 + 1) / 2 + 0.5 * (1 + 9) / 2)
    assert g_loss.item() == pytest.approx(0.5 * (4 + 4) / 2)
    d_loss, g_loss = gan.hinge_losses(r, f)
    assert d_loss.item() == pytest.approx((0 + 1) / 2 + (0 + 4) / 2) and g_loss.item() == pytest.approx(-1.0)


@pytest.mark.parametrize("bad", [torch.zeros(4, 2), torch.zeros(2, 3, 1), torch.tensor(1.0), torch.zeros(0)])
def test_losses_reject_scores_that_are_not_one_per_example(bad):
    with pytest.raises(ValueError, match="one score per example|empty"):
        gan.discriminator_loss(bad, torch.zeros(4))
    with pytest.raises(ValueError, match="one score per example|empty"):
        gan.generator_loss(bad)


def test_generator_loss_rejects_unknown_kind():
    with pytest.raises(ValueError, match="non_saturating"):
        gan.generator_loss(torch.zeros(3), "saturating")


# ------------------------------------------------------------------------- penalties


def test_gradient_penalty_of_a_linear_critic_is_norm_w_minus_one_squared():
    g = torch.Generator().manual_seed(0)
    critic = nn.Linear(5, 1).double()
    real = torch.randn(32, 5, generator=g, dtype=torch.float64)
    fake = torch.randn(32, 5, generator=g, dtype=torch.float64)
    hand = (critic.weight.norm() - 1) ** 2  # the gradient of w.x + b is w at every x_hat
    torch.testing.assert_close(gan.gradient_penalty(critic, real, fake, generator=g), hand, atol=1e-6, rtol=0)


def test_gradient_penalty_of_a_linear_critic_on_images():
    w = torch.randn(1, 28, 28, dtype=torch.float64)

    def critic(x):
        return (x * w).flatten(1).sum(1)

    real, fake = torch.rand(4, 1, 28, 28, dtype=torch.float64), torch.rand(4, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(gan.gradient_penalty(critic, real, fake), (w.norm() - 1) ** 2, atol=1e-6, rtol=0)
    eps = torch.rand(4, 1, dtype=torch.float64)  # (B, 1) weights are per example, also for images
    torch.testing.assert_close(gan.gradient_penalty(critic, real, fake, eps=eps), (w.norm() - 1) ** 2,
                               atol=1e-6, rtol=0)


def test_gradient_penalty_of_a_quadratic_critic_uses_the_interpolates():
    # f(x) = ||x||^2 / 2 has gradient x, so the penalty is mean (||x_hat|| - 1)^2
    real = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    fake = torch.tensor([[0.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    eps = torch.tensor([0.5, 0.25], dtype=torch.float64)
    # x_hat = [1.5, 2.0] (norm 2.5) and [0, 1.5] (norm 1.5)
    hand = ((2.5 - 1) ** 2 + (1.5 - 1) ** 2) / 2
    pen = gan.gradient_penalty(lambda x: 0.5 * x.pow(2).sum(1), real, fake, eps=eps)
    assert pen.item() == pytest.approx(hand, abs=1e-9)


def test_gradient_penalty_is_differentiable_with_respect_to_the_critic():
    critic = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    pen = gan.gradient_penalty(critic, torch.randn(8, 2), torch.randn(8, 2))
    pen.backward()
    # every parameter but the last bias (which does not change the gradient w.r.t. x) gets a gradient
    for p in (critic[0].weight, critic[0].bias, critic[2].weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_gradient_penalty_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"same shape.*\(8, 2\).*\(6, 2\)"):
        gan.gradient_penalty(nn.Linear(2, 1), torch.randn(8, 2), torch.randn(6, 2))
    with pytest.raises(ValueError, match="eps"):
        gan.gradient_penalty(nn.Linear(2, 1), torch.randn(8, 2), torch.randn(8, 2), eps=torch.rand(5))


def test_dragan_penalty_of_a_linear_discriminator_is_norm_w_minus_one_squared():
    critic = nn.Linear(3, 1).double()
    real = torch.randn(16, 3, dtype=torch.float64)
    torch.testing.assert_close(gan.dragan_penalty(critic, real), (critic.weight.norm() - 1) ** 2, atol=1e-6, rtol=0)


def test_clip_weights_bounds_every_parameter():
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(100)
    gan.clip_weights_(net, 0.01)
    assert all(p.abs().max() <= 0.01 for p in net.parameters())


def test_spectral_norm_makes_the_top_singular_value_one():
    torch.manual_seed(0)
    disc = gan.apply_spectral_norm(gan_networks.ToyDiscriminator(hidden=32))
    x = torch.randn(64, 2)
    for _ in range(30):  # one power iteration per training forward pass
        disc(x)
    layers = [m for m in disc.modules() if isinstance(m, nn.Linear)]
    assert len(layers) == 4
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach(), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=1e-3)


# ------------------------------------------------------------------------- models


@pytest.mark.parametrize("n_classes", [0, 8])
def test_toy_models_map_shapes(n_classes):
    g = gan_networks.ToyGenerator(2, 32, n_classes=n_classes)
    d = gan_networks.ToyDiscriminator(2, 32, n_classes=n_classes)
    y = torch.arange(5) % 8 if n_classes else None
    x = g(torch.randn(5, 2), y)
    assert x.shape == (5, 2)
    assert d(x, y).shape == (5,)


@pytest.mark.parametrize("cls_g, cls_d, kw", [
    (gan_networks.MLPGenerator, gan_networks.MLPDiscriminator, {}),
    (gan_networks.DCGANGenerator, gan_networks.DCGANDiscriminator, {}),
    (gan_networks.DCGANGenerator, gan_networks.DCGANDiscriminator, {"self_attention": True}),
])
@pytest.mark.parametrize("n_classes", [0, 10])
def test_image_models_make_28x28_images_in_minus_one_one(cls_g, cls_d, kw, n_classes):
    g = cls_g(latent_dim=16, n_classes=n_classes, **kw)
    d = cls_d(n_classes=n_classes, **kw)
    y = torch.arange(6) % 10 if n_classes else None
    x = g(torch.randn(6, 16), y)
    assert x.shape == (6, 1, 28, 28)
    assert x.abs().max() <= 1
    logits = d(x, y)
    assert logits.shape == (6,)
    logits.sum().backward()


def test_models_reject_bad_inputs():
    with pytest.raises(ValueError, match=r"z must have shape \(B, 16\)"):
        gan_networks.MLPGenerator(latent_dim=16)(torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        gan_networks.DCGANDiscriminator()(torch.randn(3, 1, 32, 32))
    with pytest.raises(ValueError, match="conditional"):
        gan_networks.ToyGenerator(n_classes=8)(torch.randn(3, 2))
    with pytest.raises(ValueError, match="unconditional"):
        gan_networks.ToyDiscriminator()(torch.randn(3, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 8\)"):
        gan_networks.ToyDiscriminator(n_classes=8)(torch.randn(3, 2), torch.tensor([0, 8, 1]))


def test_conditional_discriminator_depends_on_the_label():
    torch.manual_seed(0)
    d = gan_networks.ToyDiscriminator(hidden=16, n_classes=4)
    x = torch.randn(4, 2)
    assert not torch.allclose(d(x, torch.zeros(4, dtype=torch.long)), d(x, torch.ones(4, dtype=torch.long)))


def test_self_attention_starts_as_identity_and_attends_with_a_distribution():
    torch.manual_seed(0)
    sa = gan_networks.SelfAttention2d(16)
    x = torch.randn(2, 16, 5, 7)
    y, beta = sa(x, return_attention=True)
    torch.testing.assert_close(y, x)  # gamma = 0 at initialisation
    assert beta.shape == (2, 35, 35)
    torch.testing.assert_close(beta.sum(-1), torch.ones(2, 35))
    with torch.no_grad():
        sa.gamma.fill_(1.0)
    assert not torch.allclose(sa(x), x)


def test_gan_sample_is_reproducible_and_cycles_labels():
    model = gan_networks.GAN(gan_networks.ToyGenerator(n_classes=8), gan_networks.ToyDiscriminator(n_classes=8))
    a = model.sample(16, generator=torch.Generator().manual_seed(0))
    b = model.sample(16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, model.generator(z, torch.arange(16) % 8).detach())


# ------------------------------------------------------------------------- checkers


def test_checkers_accept_right_answers_and_reject_wrong_ones(capsys):
    assert gan.check_optimal_discriminator(lambda p, q: p / (p + q))
    assert not gan.check_optimal_discriminator(lambda p, q: p)
    assert gan.check_optimal_discriminator(lambda p, q: 0.9 * p / (p + q), real_target=0.9)
    assert not gan.check_optimal_discriminator(lambda p, q: p / (p + q), real_target=0.9)
    assert gan.check_stable_generator_loss(lambda f: -nn.functional.softplus(f).mean())
    assert not gan.check_stable_generator_loss(lambda f: torch.log(1 - torch.sigmoid(f)).mean())
    assert gan.check_gradient_penalty(lambda c, r, f, e: gan.gradient_penalty(c, r, f, eps=e))
    assert not gan.check_gradient_penalty(lambda c, r, f, e: gan.gradient_penalty(c, r, f, eps=e).detach())
    assert gan.check_hinge_losses(gan.hinge_losses)
    assert not gan.check_hinge_losses(lambda r, f: gan.wasserstein_losses(r, f))
    out = capsys.readouterr().out
    assert out.count("Correct:") == 5 and out.count("Not yet:") == 5


# ------------------------------------------------------------------------- DiffAugment


@pytest.mark.parametrize("policy", ["", "brightness", "contrast", "translation", "cutout", "translation,cutout",
                                    "brightness,contrast,translation,cutout"])
def test_diff_augment_keeps_shapes_and_is_pure(policy):
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    before = x.clone()
    y = diffaugment.diff_augment(x, policy, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(x, before)  # x is not modified
    if not policy:
        assert y is x


@pytest.mark.parametrize("policy", ["brightness", "contrast", "translation", "cutout",
                                    "brightness,contrast,translation,cutout"])
def test_diff_augment_is_differentiable_back_to_the_generator(policy):
    torch.manual_seed(0)
    g = gan_networks.DCGANGenerator(latent_dim=8, base=8)
    fake = g(torch.randn(4, 8))
    fake.retain_grad()
    out = diffaugment.diff_augment(fake, policy, torch.Generator().manual_seed(1), fill=-1.0)
    (out * torch.randn_like(out)).sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is not None for p in g.parameters() if p.requires_grad)
    assert sum(p.grad.abs().sum() for p in g.parameters()) > 0


def test_diff_augment_translation_moves_a_pixel_by_the_drawn_offset_with_zero_padding():
    x = torch.zeros(200, 1, 28, 28)
    x[:, 0, 1, 26] = 1.0  # near the top-right corner: large shifts push it out of the image
    y = diffaugment.diff_augment(x, "translation", torch.Generator().manual_seed(3))
    # the offsets drawn for this seed: the same draws as in the function, dy then dx in [-4, 4]
    g = torch.Generator().manual_seed(3)
    dy = torch.randint(-4, 5, (200,), generator=g)
    dx = torch.randint(-4, 5, (200,), generator=g)
    for b in range(200):
        r, c = 1 + int(dy[b]), 26 + int(dx[b])
        expected = torch.zeros(28, 28)
        if 0 <= r < 28 and 0 <= c < 28:
            expected[r, c] = 1.0
        torch.testing.assert_close(y[b, 0], expected)  # moved, or gone: nothing wraps around
    assert (y.sum((1, 2, 3)) == 0).any() and (y.sum((1, 2, 3)) == 1).any()
    # a constant image: the uncovered border is zero padding (or the given fill)
    ones = diffaugment.diff_augment(torch.ones(50, 1, 28, 28), "translation", torch.Generator().manual_seed(4),
                                    fill=-1.0)
    assert set(ones.unique().tolist()) <= {-1.0, 1.0} and (ones == -1).any()


def test_diff_augment_cutout_blanks_one_square():
    y = diffaugment.diff_augment(torch.ones(20, 1, 28, 28), "cutout", torch.Generator().manual_seed(0))
    for b in range(20):
        rows, cols = torch.nonzero(y[b, 0] == 0, as_tuple=True)
        assert len(rows) > 0 and len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert rows.max() - rows.min() + 1 <= 14 and cols.max() - cols.min() + 1 <= 14


def test_diff_augment_same_seed_same_augmentation():
    x = torch.rand(8, 1, 28, 28)
    policy = "brightness,contrast,translation,cutout"
    a = diffaugment.diff_augment(x, policy, torch.Generator().manual_seed(7))
    b = diffaugment.diff_augment(x, policy, torch.Generator().manual_seed(7))
    c = diffaugment.diff_augment(x, policy, torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("bad", ["saturation", "translation,flip", "cutout, rotate"])
def test_diff_augment_rejects_an_unknown_policy_by_name(bad):
    name = [p.strip() for p in bad.split(",") if p.strip() not in diffaugment.DIFF_AUGMENT_POLICIES][0]
    with pytest.raises(ValueError, match=f"'{name}'.*allowed: brightness, contrast, translation, cutout"):
        diffaugment.diff_augment(torch.zeros(1, 1, 28, 28), bad)
    with pytest.raises(ValueError, match=f"'{name}'"):
        recipe.Config(data="mnist", diffaugment=bad)


def test_recipe_diffaugment_needs_images_and_trains_on_mnist(mnist):
    with pytest.raises(ValueError, match="mnist"):
        recipe.Config(data="ring", diffaugment="translation")

    cfg = recipe.Config(data="mnist", arch="dcgan", steps=2, hidden=64, batch_size=16, diffaugment="translation,cutout")
    model = recipe.build_model(cfg)
    history = recipe.train(cfg, model, progress=False)
    assert all(math.isfinite(v) for v in history["d_loss"] + history["g_loss"])


# ------------------------------------------------------------------------- self-conditioning


def test_self_conditioned_gan_draws_clusters_with_their_shares_and_keeps_them_with_the_weights():
    def networks():
        return gan_networks.MLPGenerator(8, 16, n_classes=4), gan_networks.MLPDiscriminator(16, n_classes=4)

    model = gan_networks.GAN(*networks(), self_conditioned=True)
    model.cluster_shares.copy_(torch.tensor([0.7, 0.2, 0.1, 0.0]))
    draws = model.sample_clusters(20_000, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).float() / 20_000
    torch.testing.assert_close(freq, torch.tensor([0.7, 0.2, 0.1, 0.0]), atol=0.015, rtol=0)  # se <= 0.0033
    clone = gan_networks.GAN(*networks(), self_conditioned=True)
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone.cluster_shares, model.cluster_shares)
    x = clone.sample(6, generator=torch.Generator().manual_seed(1))  # no labels: clusters drawn
    assert x.shape == (6, 1, 28, 28)
    with pytest.raises(ValueError, match="n_classes >= 2 clusters"):
        gan_networks.GAN(gan_networks.MLPGenerator(8, 16), gan_networks.MLPDiscriminator(16), self_conditioned=True)
    with pytest.raises(ValueError, match="self-conditioned GANs"):
        gan_networks.GAN(gan_networks.MLPGenerator(8, 16), gan_networks.MLPDiscriminator(16)).sample_clusters(3)


@pytest.mark.parametrize("bad, message", [
    (dict(self_condition=1), "K >= 2"),
    (dict(self_condition=-3), "K >= 2"),
    (dict(self_condition=10, conditional=True), "unconditional MNIST"),
    (dict(self_condition=10, info_codes=10), "unconditional MNIST"),
    (dict(self_condition=10, data="ring"), "unconditional MNIST"),
])
def test_recipe_self_condition_rejects_bad_settings(bad, message):
    with pytest.raises(ValueError, match=message):
        recipe.Config(**{"data": "mnist", **bad})


@pytest.mark.slow
def test_recipe_self_conditioned_gan_trains_on_the_clusters_of_the_training_images(mnist):
    from companion.clustering import kmeans
    from companion.data import load_mnist

    cfg = recipe.Config(data="mnist", arch="dcgan", steps=2, hidden=64, batch_size=16, self_condition=5, n_eval=50)
    model = recipe.build_model(cfg)
    recipe.train(cfg, model, progress=False)
    ids = kmeans(load_mnist("train")[0], 5, seed=0)
    expected = torch.bincount(ids, minlength=5).float() / ids.numel()
    torch.testing.assert_close(model.cluster_shares, expected)
    assert model.n_classes == 5 and bool((expected > 0.05).all())
    x = recipe.sample(cfg, model, 8)
    assert x.shape == (8, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert set(recipe.evaluate(cfg, model)) == {"nn_fake_to_real", "nn_real_to_fake"}


# ------------------------------------------------------------------------- recipe


def test_recipe_resolves_defaults_per_data_and_loss():
    cfg = recipe.resolve(recipe.Config(loss="wgan-gp"))
    assert cfg.n_critic == 5 and cfg.latent_dim == 2 and cfg.beta2 == 0.9 and cfg.gp_weight == 0.1
    mnist = recipe.resolve(recipe.Config(data="mnist", loss="wgan-gp"))
    assert mnist.latent_dim == 64 and mnist.gp_weight == 10.0
    assert recipe.resolve(recipe.Config(n_critic=2, loss="wgan")).n_critic == 2
    for bad in ({"loss": "vanilla"}, {"data": "cifar"}, {"arch": "resnet"}, {"self_attention": True},
                {"hidden": 0}, {"gp_weight": -1.0}):
        with pytest.raises(ValueError):
            recipe.resolve(recipe.Config(**bad))


@pytest.mark.parametrize("loss", recipe.LOSSES)
def test_recipe_trains_every_loss_on_the_ring_with_finite_losses(loss):
    cfg = recipe.Config(loss=loss, steps=3, hidden=16, batch_size=32, n_eval=200)
    model = recipe.build_model(cfg)
    history = recipe.train(cfg, model, progress=False)
    assert len(history["d_loss"]) == 3
    assert all(math.isfinite(v) for v in history["d_loss"] + history["g_loss"])
    metrics = recipe.evaluate(cfg, model)
    assert set(metrics) == {"modes_captured", "high_quality_fraction", "kl_to_uniform"}
    assert recipe.sample(cfg, model, 10).shape == (10, 2)


def test_recipe_weight_clipping_and_spectral_norm_are_applied():
    cfg = recipe.Config(loss="wgan", steps=2, hidden=16, batch_size=16, clip_value=0.02)
    model = recipe.build_model(cfg)
    recipe.train(cfg, model, progress=False)
    assert max(p.abs().max().item() for p in model.discriminator.parameters()) <= 0.02
    sn = recipe.build_model(recipe.Config(spectral_norm=True, hidden=16))
    assert any("parametrizations" in name for name, _ in sn.discriminator.named_parameters())


def test_recipe_conditional_ring_reports_label_accuracy():
    cfg = recipe.Config(conditional=True, steps=2, hidden=16, batch_size=32, n_eval=100)
    model = recipe.build_model(cfg)
    recipe.train(cfg, model, progress=False)
    assert "label_accuracy" in recipe.evaluate(cfg, model)


def test_recipe_same_seed_same_result():
    cfg = recipe.Config(steps=5, hidden=16, batch_size=32)
    a, b = recipe.build_model(cfg), recipe.build_model(cfg)
    ha, hb = recipe.train(cfg, a, progress=False), recipe.train(cfg, b, progress=False)
    assert ha["g_loss"] == hb["g_loss"]
    torch.testing.assert_close(recipe.sample(cfg, a, 8, torch.Generator().manual_seed(0)),
                               recipe.sample(cfg, b, 8, torch.Generator().manual_seed(0)))


def test_recipe_g_ema_replaces_the_generator_by_the_moving_average_of_its_weights():
    from dataclasses import replace

    cfg = recipe.Config(steps=6, hidden=16, batch_size=32)
    plain, averaged = recipe.build_model(cfg), recipe.build_model(replace(cfg, g_ema=0.9))
    trajectory = []  # G's weights after every step of the run without averaging

    def record(i, history):
        trajectory.append([p.detach().clone() for p in plain.generator.parameters()])

    recipe.train(cfg, plain, progress=False, callback=record)
    recipe.train(replace(cfg, g_ema=0.9), averaged, progress=False)
    # the averaging does not change training: same discriminator
    for p, q in zip(plain.discriminator.parameters(), averaged.discriminator.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    init = [p.detach().clone() for p in recipe.build_model(cfg).generator.parameters()]
    ema = init
    for i, weights in enumerate(trajectory):
        decay = min(0.9, (1 + i) / (10 + i))
        ema = [decay * e + (1 - decay) * w for e, w in zip(ema, weights, strict=True)]
    for p, e in zip(averaged.generator.parameters(), ema, strict=True):
        torch.testing.assert_close(p, e)
    assert recipe.resolve(cfg).g_ema == 0.0
    with pytest.raises(ValueError, match="g_ema"):
        recipe.Config(g_ema=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("arch, conditional", [("mlp", False), ("dcgan", True)])
def test_recipe_trains_on_mnist_for_a_few_steps(arch, conditional, mnist):
    cfg = recipe.Config(data="mnist", arch=arch, conditional=conditional, steps=2, hidden=64, batch_size=16, n_eval=50)
    model = recipe.build_model(cfg)
    history = recipe.train(cfg, model, progress=False)
    assert all(math.isfinite(v) for v in history["d_loss"])
    x = recipe.sample(cfg, model, 4)
    assert x.shape == (4, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    metrics = recipe.evaluate(cfg, model)
    assert set(metrics) == {"nn_fake_to_real", "nn_real_to_fake"} and all(v > 0 for v in metrics.values())


def test_snapshot_callback_records_fixed_noise_samples_into_the_history():
    cfg = recipe.Config(steps=4, hidden=16, batch_size=32)
    model = recipe.build_model(cfg)
    history = recipe.train(cfg, model, progress=False, callback=recipe.snapshot_callback(cfg, model, every=2, n=50))
    snaps = recipe.snapshots(history)
    assert [step for step, _ in snaps] == [1, 2, 4]
    assert all(xs.shape == (50, 2) for _, xs in snaps)
    z = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(snaps[-1][1], model.generator(z).detach())  # the last snapshot is the final G
    assert len(history["snapshot_modes"]) == 3 and len(history["snapshot_hq"]) == 3
    with pytest.raises(ValueError, match="ring"):
        recipe.snapshot_callback(recipe.Config(data="mnist"), model, every=2)


def test_compare_variants_gives_one_row_per_variant_and_seed():
    base = recipe.Config(steps=2, hidden=8, batch_size=16, n_eval=100)
    variants = {"ns": {"loss": "ns"}, "cond": {"conditional": True}}
    rows, models = gan_variants.compare_variants(base, variants, seeds=(0, 1), progress=False, return_models=True)
    assert [(r["variant"], r["seed"]) for r in rows] == [("ns", 0), ("ns", 1), ("cond", 0), ("cond", 1)]
    assert "label_accuracy" in rows[2] and "label_accuracy" not in rows[0]
    assert models["cond", 1].n_classes == 8


def test_batch_norm_recalibration_gives_the_statistics_of_the_current_weights():
    torch.manual_seed(0)
    g = gan_networks.DCGANGenerator(latent_dim=8, base=4)
    with torch.no_grad():  # stale statistics, as after the moving average replaced the weights
        g.project[1].running_mean.fill_(5.0)
        g.project[1].running_var.fill_(9.0)
    momentum = g.project[1].momentum
    noise = torch.Generator().manual_seed(1)
    recipe.recalibrate_batch_norm(g, lambda: [torch.randn(64, 8, generator=noise)], n_batches=20)
    with torch.no_grad():
        pre = g.project[0](torch.randn(4096, 8))
    torch.testing.assert_close(g.project[1].running_mean, pre.mean(0), atol=0.05, rtol=0)
    torch.testing.assert_close(g.project[1].running_var, pre.var(0), atol=0.05, rtol=0.1)
    assert g.project[1].momentum == momentum and g.training
