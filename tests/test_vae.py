"""Tests of companion.vae and companion.recipes.vae (chapter "Variational autoencoders")."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.divergences import gaussian_kl
from companion.vae import (
    CVAE,
    VAE,
    VQVAE,
    LinearGaussianLVM,
    VectorQuantizer,
    _gaussian_kl_full,
    bernoulli_nll,
    check_gaussian_kl,
    check_iwae_from_log_weights,
    check_perplexity,
    check_posterior,
    codebook_perplexity,
    elbo,
    gaussian_log_prob,
    iwae_bound,
    reparameterization_gradients,
    reparameterize,
    score_function_gradients,
)

floats = st.floats(min_value=-3.0, max_value=3.0, allow_nan=False)


def small_vae(z_dim=4, seed=0):
    torch.manual_seed(seed)
    return VAE((1, 6, 6), hidden=(16,), z_dim=z_dim)


def images(n, seed=0, shape=(1, 6, 6)):
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------- KL and ELBO maths


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(floats, floats, floats, floats), min_size=1, max_size=6))
def test_gaussian_kl_agrees_with_torch_distributions(rows):
    t = torch.tensor(rows, dtype=torch.float64).T  # (4, D)
    mu_q, logvar_q, mu_p, logvar_p = t
    q = torch.distributions.Independent(torch.distributions.Normal(mu_q, torch.exp(0.5 * logvar_q)), 1)
    p = torch.distributions.Independent(torch.distributions.Normal(mu_p, torch.exp(0.5 * logvar_p)), 1)
    want = torch.distributions.kl_divergence(q, p)
    torch.testing.assert_close(gaussian_kl(mu_q, logvar_q, mu_p, logvar_p), want, rtol=1e-9, atol=1e-10)


def test_full_covariance_kl_agrees_with_torch_distributions():
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(2, 3, 3, generator=g, dtype=torch.float64)
    S0, S1 = A @ A.T + 0.1 * torch.eye(3, dtype=torch.float64), B @ B.T + 0.1 * torch.eye(3, dtype=torch.float64)
    m0, m1 = torch.randn(2, 3, generator=g, dtype=torch.float64)
    want = torch.distributions.kl_divergence(torch.distributions.MultivariateNormal(m0, S0),
                                             torch.distributions.MultivariateNormal(m1, S1))
    torch.testing.assert_close(_gaussian_kl_full(m0, S0, m1, S1), want, rtol=1e-9, atol=1e-10)


def test_gaussian_log_prob_matches_torch_normal():
    g = torch.Generator().manual_seed(1)
    z, mu, logvar = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    want = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    torch.testing.assert_close(gaussian_log_prob(z, mu, logvar), want)
    torch.testing.assert_close(gaussian_log_prob(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_reparameterize_is_differentiable_and_has_the_right_moments():
    mu = torch.tensor([1.0, -2.0], requires_grad=True)
    logvar = torch.tensor([0.0, math.log(4.0)], requires_grad=True)
    n = 20_000
    z = reparameterize(mu.expand(n, 2), logvar.expand(n, 2), torch.Generator().manual_seed(0))
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.full((2,), float(n)))  # dz/dmu = 1 per sample
    assert logvar.grad.abs().sum() > 0  # dz/dlogvar = eps * sigma / 2, nonzero
    # mean within 5 standard errors, standard deviation within 3%
    se = torch.tensor([1.0, 2.0]) / math.sqrt(n)
    assert ((z.mean(0) - mu.detach()).abs() < 5 * se).all()
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 2.0]), rtol=0.03, atol=0)


def test_reparameterize_rejects_mismatched_shapes_and_is_reproducible():
    with pytest.raises(ValueError, match="logvar has shape"):
        reparameterize(torch.zeros(3, 2), torch.zeros(3, 4))
    a = reparameterize(torch.zeros(4, 2), torch.zeros(4, 2), torch.Generator().manual_seed(5))
    b = reparameterize(torch.zeros(4, 2), torch.zeros(4, 2), torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)


def test_bernoulli_nll_is_the_summed_negative_log_likelihood_and_stable():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    x = torch.tensor([[1.0, 0.0, 0.3]])
    p = torch.sigmoid(logits)
    want = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(1)
    torch.testing.assert_close(bernoulli_nll(logits, x), want)
    extreme = bernoulli_nll(torch.tensor([[200.0, -200.0]]), torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(extreme, torch.tensor([400.0]))  # log(sigmoid) would give inf


def test_bernoulli_nll_rejects_bad_inputs():
    with pytest.raises(ValueError, match="logits have shape"):
        bernoulli_nll(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        bernoulli_nll(torch.zeros(2, 4), torch.full((2, 4), 255.0))


def test_elbo_loss_is_recon_plus_beta_kl():
    g = torch.Generator().manual_seed(0)
    x, logits = torch.rand(5, 8, generator=g), torch.randn(5, 8, generator=g)
    mu, logvar = torch.randn(2, 5, 3, generator=g)
    terms = elbo(x, logits, mu, logvar, beta=0.3, reduction="none")
    torch.testing.assert_close(terms.recon, bernoulli_nll(logits, x))
    torch.testing.assert_close(terms.kl, gaussian_kl(mu, logvar))
    torch.testing.assert_close(terms.loss, terms.recon + 0.3 * terms.kl)
    torch.testing.assert_close(terms.elbo, -(terms.recon + terms.kl))
    mean = elbo(x, logits, mu, logvar, beta=0.3)
    torch.testing.assert_close(mean.loss, terms.loss.mean())


def test_elbo_rejects_bad_shapes_and_negative_beta():
    x, logits, mu = torch.rand(5, 8), torch.zeros(5, 8), torch.zeros(5, 3)
    with pytest.raises(ValueError, match="both be"):
        elbo(x, logits, mu, torch.zeros(5, 2))
    with pytest.raises(ValueError, match="batch size"):
        elbo(x, logits, torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="beta"):
        elbo(x, logits, mu, mu, beta=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        elbo(x, logits, mu, mu, reduction="avg")


def test_beta_zero_reduces_to_a_plain_autoencoder_objective():
    model, x = small_vae(), images(6)
    # beta = 0: the loss is the reconstruction of the sampled z and the KL sends no gradient
    terms = model.loss(x, beta=0.0, generator=torch.Generator().manual_seed(3))
    logits, mu, logvar = model(x, torch.Generator().manual_seed(3))
    torch.testing.assert_close(terms.loss, F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / 6)
    grads_vae = torch.autograd.grad(terms.loss, list(model.parameters()))
    recon_only = bernoulli_nll(model(x, torch.Generator().manual_seed(3))[0], x).mean()
    for a, b in zip(grads_vae, torch.autograd.grad(recon_only, list(model.parameters())), strict=True):
        torch.testing.assert_close(a, b)
    # with a deterministic encoder (sigma -> 0) it is exactly the autoencoder loss BCE(decode(mu), x)
    with torch.no_grad():
        model.to_moments.bias[model.z_dim:] = -60.0
        model.to_moments.weight[model.z_dim:] = 0.0
    ae_loss = bernoulli_nll(model.decode(model.encode(x)[0]), x).mean()
    torch.testing.assert_close(model.loss(x, beta=0.0).loss, ae_loss, rtol=1e-6, atol=1e-5)
    assert model.loss(x, beta=1.0).kl > 50  # ... which the beta = 1 ELBO punishes: KL ~ 0.5 * 60 per dim


# ------------------------------------------------------------------------------ models


def test_vae_shapes_and_clear_errors():
    model, x = small_vae(), images(3)
    logits, mu, logvar = model(x)
    assert logits.shape == x.shape and mu.shape == logvar.shape == (3, 4)
    assert model(x.flatten(1))[0].shape == (3, 36)  # flattened input is accepted, and stays flat
    assert model.sample(5).shape == (5, 1, 6, 6)
    assert model.decode(torch.zeros(7, 3, 4)).shape == (7, 3, 1, 6, 6)
    with pytest.raises(ValueError, match=r"expects x of shape \(B, 1, 6, 6\) or \(B, 36\), got \(3, 1, 5, 5\)"):
        model(torch.rand(3, 1, 5, 5))
    with pytest.raises(ValueError, match=r"z must have shape \(\.\.\., 4\)"):
        model.decode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="activation"):
        VAE(activation="sigmoidish")


def test_cvae_generates_the_requested_labels_and_checks_them():
    torch.manual_seed(0)
    model = CVAE((1, 6, 6), hidden=(16,), z_dim=3, n_classes=4)
    x, y = images(5), torch.tensor([0, 1, 2, 3, 0])
    assert model.loss(x, y).loss.ndim == 0
    assert model.sample(6, labels=2).shape == (6, 1, 6, 6)
    # the decoder sees the label: same z, different label, different image
    z = torch.zeros(2, 3)
    assert not torch.allclose(model.decode(z, torch.tensor([0, 1]))[0], model.decode(z, torch.tensor([0, 1]))[1])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        model.loss(x, torch.tensor([0, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match="integer class labels"):
        model.loss(x, torch.zeros(5))


# ------------------------------------------------------------------- linear-Gaussian model


@pytest.fixture
def lg():
    g = torch.Generator().manual_seed(0)
    model = LinearGaussianLVM.random(x_dim=5, z_dim=2, sigma=0.6, generator=g)
    x, _ = model.sample(7, generator=g)
    return model, x


def test_linear_gaussian_marginal_and_posterior_satisfy_bayes_rule(lg):
    model, x = lg
    mean, cov = model.posterior(x)
    z = torch.randn(3, 7, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_post = torch.distributions.MultivariateNormal(mean, cov).log_prob(z)
    # log p(x) = log p(x, z) - log p(z | x) for every z
    torch.testing.assert_close(model.log_joint(x, z) - log_post, model.log_marginal(x).expand(3, 7),
                               rtol=0, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(st.lists(floats, min_size=4, max_size=4), st.floats(-2.0, 1.0), st.floats(-0.9, 0.9))
def test_elbo_plus_kl_to_posterior_equals_log_marginal_for_any_gaussian_q(mean, log_scale, corr):
    g = torch.Generator().manual_seed(0)
    model = LinearGaussianLVM.random(x_dim=5, z_dim=2, sigma=0.6, generator=g)
    x, _ = model.sample(2, generator=g)
    q_mean = torch.tensor(mean, dtype=torch.float64).reshape(2, 2)
    s = math.exp(log_scale)
    q_cov = torch.tensor([[s, corr * s * 0.7], [corr * s * 0.7, 0.49 * s]], dtype=torch.float64)
    total = model.elbo(x, q_mean, q_cov) + model.kl_to_posterior(x, q_mean, q_cov)
    torch.testing.assert_close(total, model.log_marginal(x), rtol=0, atol=1e-6)


def test_elbo_is_maximal_and_tight_at_the_true_posterior(lg):
    model, x = lg
    mean, cov = model.posterior(x)
    best = model.elbo(x, mean, cov)
    torch.testing.assert_close(best, model.log_marginal(x), rtol=0, atol=1e-9)
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        dm = 0.3 * torch.randn(mean.shape, generator=g, dtype=torch.float64)
        A = torch.eye(2, dtype=torch.float64) + 0.3 * torch.randn(2, 2, generator=g, dtype=torch.float64)
        assert (model.elbo(x, mean + dm, A @ cov @ A.T) < best).all()


def test_exact_linear_gaussian_elbo_matches_monte_carlo(lg):
    model, x = lg
    q_mean, logvar = torch.zeros(7, 2, dtype=torch.float64), torch.full((7, 2), -1.0, dtype=torch.float64)
    z = reparameterize(q_mean.expand(40_000, 7, 2), logvar.expand(40_000, 7, 2), torch.Generator().manual_seed(3))
    mc = model.log_joint(x, z) - gaussian_log_prob(z, q_mean, logvar)
    exact = model.elbo(x, q_mean, torch.diag_embed(logvar.exp()))
    se = mc.std(0) / math.sqrt(mc.shape[0])
    assert ((mc.mean(0) - exact).abs() < 5 * se).all()


def test_linear_gaussian_rejects_bad_shapes(lg):
    model, x = lg
    with pytest.raises(ValueError, match=r"x must be \(B, 5\)"):
        model.log_marginal(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="q_cov must be"):
        model.elbo(x, torch.zeros(7, 2), torch.eye(3))
    with pytest.raises(ValueError, match="b must be"):
        LinearGaussianLVM(torch.zeros(5, 2), torch.zeros(4), 1.0)


# ------------------------------------------------------------------------------- IWAE


def test_iwae_bound_rejects_k_below_one_and_non_integers(lg):
    model, x = lg
    q = (torch.zeros(7, 2, dtype=torch.float64), torch.zeros(7, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="k must be >= 1"):
        iwae_bound(model, x, 0, q=q)
    with pytest.raises(TypeError, match="k must be an int"):
        iwae_bound(model, x, 2.0, q=q)
    with pytest.raises(TypeError, match="no encode"):
        iwae_bound(model, x, 2)
    with pytest.raises(ValueError, match="q must be"):
        iwae_bound(model, x, 2, q=(q[0][:3], q[1][:3]))


def test_iwae_is_exact_for_every_sample_when_q_is_the_posterior():
    # orthogonal columns of W make the posterior covariance diagonal, so q can equal it exactly
    W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    model = LinearGaussianLVM(W, torch.zeros(4, dtype=torch.float64), 0.5)
    x, _ = model.sample(6, generator=torch.Generator().manual_seed(0))
    mean, cov = model.posterior(x)
    q = (mean, torch.log(torch.diagonal(cov)).expand(6, 2))
    for k in (1, 5):
        torch.testing.assert_close(iwae_bound(model, x, k, q=q), model.log_marginal(x), rtol=0, atol=1e-10)


def test_iwae_is_above_the_elbo_non_decreasing_in_k_and_below_log_marginal(lg):
    model, x = lg
    mean, cov = model.posterior(x)
    # a mean-field q with a shifted mean: not the posterior, so every bound is strict
    q = (mean + 0.3, torch.log(torch.diagonal(cov)).expand_as(mean) + 0.5)
    exact_elbo = model.elbo(x, q[0], torch.diag_embed(q[1].exp()))
    log_px = model.log_marginal(x)
    g = torch.Generator().manual_seed(4)
    reps = 4000
    estimates = {}
    q_rep = (q[0].repeat(reps, 1), q[1].repeat(reps, 1))  # reps independent draws per example
    for k in (1, 4, 32):
        draws = iwae_bound(model, x.repeat(reps, 1), k, q=q_rep, generator=g).reshape(reps, -1)
        estimates[k] = (draws.mean(0), draws.std(0) / math.sqrt(reps))
    mean1, se1 = estimates[1]
    assert ((mean1 - exact_elbo).abs() < 5 * se1).all()  # IWAE_1 is the ELBO
    for small, large in ((1, 4), (4, 32)):
        (m_s, se_s), (m_l, se_l) = estimates[small], estimates[large]
        # tightening by much more than the noise: the gap to log p(x) shrinks at least 20%
        assert (m_l - m_s > 5 * torch.sqrt(se_s**2 + se_l**2)).all()
        assert ((log_px - m_l) < 0.8 * (log_px - m_s)).all()
    m32, se32 = estimates[32]
    assert (m32 < log_px + 5 * se32).all()


def test_iwae_k1_matches_the_vae_elbo_in_expectation():
    model, x = small_vae(), images(4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        reps = 3000
        xr = x.repeat(reps, 1, 1, 1)
        iwae1 = iwae_bound(model, xr, 1, generator=g).reshape(reps, 4)
        neg_loss = -model.loss(xr, generator=g, reduction="none").loss.reshape(reps, 4)
        iwae16 = iwae_bound(model, x.repeat(200, 1, 1, 1), 16, generator=g).reshape(200, 4)
    diff_se = torch.sqrt(iwae1.var(0) / reps + neg_loss.var(0) / reps)
    assert ((iwae1.mean(0) - neg_loss.mean(0)).abs() < 5 * diff_se).all()
    assert (iwae16.mean(0) > iwae1.mean(0)).all()


# ---------------------------------------------------------------------------- VQ-VAE


def test_vector_quantizer_picks_the_nearest_code():
    vq = VectorQuantizer(codebook_size=3, code_dim=2)
    with torch.no_grad():
        vq.codebook.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]]))
    z_e = torch.tensor([[0.1, -0.1], [0.9, 1.2], [-1.5, 0.2], [0.6, 0.6]])
    out = vq(z_e)
    assert out.indices.tolist() == [0, 1, 2, 1]
    torch.testing.assert_close(out.z_q, vq.codebook.weight[out.indices])
    torch.testing.assert_close(out.commitment_loss, (z_e - out.z_q).pow(2).mean())


def test_vq_straight_through_gradient_reaches_the_encoder():
    torch.manual_seed(0)
    model = VQVAE(codebook_size=8, code_dim=4, channels=8)
    x = images(2, shape=(1, 28, 28))
    z_e = model.encode(x)
    z_e.retain_grad()
    vq = model.quantizer(z_e)
    recon = bernoulli_nll(model.decoder(vq.z_q), x).mean()
    recon.backward()
    # the reconstruction gradient passes the argmin unchanged: d recon / d z_e = d recon / d z_q
    assert z_e.grad is not None and z_e.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    # ... and does not touch the codebook, which only the codebook loss moves
    assert model.quantizer.codebook.weight.grad is None or model.quantizer.codebook.weight.grad.abs().sum() == 0
    model.zero_grad()
    model.loss(x).codebook.backward()
    assert model.quantizer.codebook.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.encoder.parameters())


def test_vqvae_shapes_sampling_and_errors():
    torch.manual_seed(0)
    model = VQVAE(codebook_size=8, code_dim=4, channels=8)
    x = images(3, shape=(1, 28, 28))
    logits, vq = model(x)
    assert logits.shape == x.shape and vq.indices.shape == (3, 7, 7)
    model.fit_prior(x)
    assert model.sample(4, generator=torch.Generator().manual_seed(0)).shape == (4, 1, 28, 28)
    with pytest.raises(ValueError, match=r"VQVAE expects x of shape \(B, 1, 28, 28\)"):
        model(torch.rand(3, 784))
    with pytest.raises(ValueError, match="z_e must be"):
        model.quantizer(torch.rand(3, 5))


def test_data_init_and_dead_code_restarts_revive_unused_codes():
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=16, code_dim=2)
    z_e = torch.randn(200, 2) * 5 + 10  # far from the tiny uniform initial codes
    assert vq(z_e).indices.unique().numel() <= 4  # collapse: a handful of the 16 codes win everything
    counts = torch.bincount(vq(z_e).indices, minlength=16)
    moved = vq.restart_dead_codes(z_e, counts, generator=torch.Generator().manual_seed(0))
    assert moved == int((counts == 0).sum()) and moved >= 12
    assert vq(z_e).indices.unique().numel() > 8
    vq.init_from_data(z_e, generator=torch.Generator().manual_seed(1))
    # every code now sits on an encoder output
    assert torch.cdist(vq.codebook.weight, z_e).min(1).values.max() < 1e-6
    with pytest.raises(ValueError, match="counts must be"):
        vq.restart_dead_codes(z_e, torch.zeros(3))


def test_codebook_perplexity_is_one_for_one_code_and_k_for_uniform_use():
    assert float(codebook_perplexity(torch.zeros(10, dtype=torch.long), 16)) == pytest.approx(1.0)
    assert float(codebook_perplexity(torch.arange(32) % 16, 16)) == pytest.approx(16.0, rel=1e-5)


# ------------------------------------------------------------------ gradient estimators


def test_both_gradient_estimators_are_unbiased_and_reparameterization_has_lower_variance():
    a = torch.tensor([1.0, -0.5], dtype=torch.float64)
    mu, logvar = torch.tensor([0.2, 0.3], dtype=torch.float64), torch.tensor([0.0, -0.5], dtype=torch.float64)

    def f(z):
        return -(z - a).pow(2).sum(-1)

    # E_q f = -|mu - a|^2 - sum(var): d/dmu = -2 (mu - a), d/dlogvar = -var
    exact_mu, exact_logvar = -2 * (mu - a), -logvar.exp()
    n = 20_000
    g = torch.Generator().manual_seed(0)
    for grads in (reparameterization_gradients(f, mu, logvar, n, generator=g),
                  score_function_gradients(f, mu, logvar, n, generator=g)):
        for est, exact in zip(grads, (exact_mu, exact_logvar), strict=True):
            se = est.std(0) / math.sqrt(n)
            assert ((est.mean(0) - exact).abs() < 5 * se).all()
    rep_var = reparameterization_gradients(f, mu, logvar, n, generator=g)[0].var(0)
    sf_var = score_function_gradients(f, mu, logvar, n, generator=g)[0].var(0)
    assert (sf_var > 5 * rep_var).all()


# --------------------------------------------------------------------- exercise checks


def test_checkers_accept_right_answers_and_reject_wrong_ones(capsys):
    assert check_gaussian_kl(gaussian_kl)
    assert not check_gaussian_kl(lambda mq, lq, mp, lp: gaussian_kl(mq, lq))  # ignores the prior
    assert check_posterior(lambda W, b, s, x: LinearGaussianLVM(W, b, s).posterior(x))
    assert not check_posterior(lambda W, b, s, x: ((x - b) @ W, torch.eye(W.shape[1])))
    assert check_iwae_from_log_weights(lambda lw: torch.logsumexp(lw, 0) - math.log(lw.shape[0]))
    assert not check_iwae_from_log_weights(lambda lw: torch.log(torch.exp(lw).mean(0)))  # overflows
    assert check_perplexity(lambda idx, k: float(codebook_perplexity(idx, k)))
    assert not check_perplexity(lambda idx, k: float(len(set(idx.tolist()))))  # counts codes used
    out = capsys.readouterr().out
    assert "Correct" in out and "Not yet" in out


# --------------------------------------------------------------------------- recipes


@pytest.fixture(scope="module")
def mnist_available():
    from companion.data import DataError, load_mnist

    try:
        load_mnist("test")
    except DataError as exc:
        pytest.skip(f"MNIST is not available: {exc}")


def test_config_is_json_serialisable_and_validated():
    from companion.recipes.vae import Config

    cfg = Config.pytorch_examples()
    assert json.loads(json.dumps(cfg.to_dict()))["hidden"] == [400]
    with pytest.raises(ValueError, match="family"):
        Config(family="gan")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["vae", "cvae", "vqvae"])
def test_recipe_trains_evaluates_and_samples_each_family(family, mnist_available):
    from companion.recipes import vae as recipe

    cfg = recipe.Config(family=family, hidden=[32], z_dim=4, channels=8, code_dim=4, codebook_size=8,
                        epochs=1, batch_size=64, train_size=256)
    model = recipe.build_model(cfg)
    history = recipe.train(cfg, model, progress=False)
    assert len(history["loss"]) == 4 and all(math.isfinite(v) for v in history["loss"])
    metrics = recipe.evaluate(cfg, model)
    assert metrics["n_test"] > 0 and all(math.isfinite(v) for v in metrics.values())
    assert recipe.sample(cfg, model, 3, generator=torch.Generator().manual_seed(0)).shape == (3, 1, 28, 28)
    # same config, same weights: the seed fixes initialisation, batches and noise
    again = recipe.build_model(cfg)
    recipe.train(cfg, again, progress=False)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
