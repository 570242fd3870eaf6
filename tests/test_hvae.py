"""Tests of companion.hvae: the two-level hierarchical VAE (chapter "VAE variants")."""

from __future__ import annotations

import math

import pytest
import torch

from companion.hvae import HierarchicalVAE
from companion.recipes import vae as recipe
from companion.vae import gaussian_log_prob


def tiny(seed=0):
    torch.manual_seed(seed)
    return HierarchicalVAE((1, 3, 3), hidden=(8,), z_dim=2, z2_dim=1)


def test_the_loss_is_the_negative_elbo_of_its_log_weights():
    model = tiny()
    x = torch.rand(4, 1, 3, 3, dtype=torch.float64)
    model.double()
    # E[loss] = -E[log w] (one sample each); average many draws of both and compare
    n = 40_000  # standard errors about 0.01 nats: the tolerance is several of them
    g = torch.Generator().manual_seed(0)
    loss = model.loss(x.repeat(n, 1, 1, 1), generator=g, reduction="none").loss.reshape(n, 4).mean(0)
    log_w = model.log_weights(x, n, generator=torch.Generator().manual_seed(1)).mean(0)
    torch.testing.assert_close(loss, -log_w, rtol=0, atol=0.05)


def test_the_iwae_bound_rises_with_k_towards_log_p_x_by_quadrature():
    model = tiny().double()
    x = torch.rand(3, 1, 3, 3, dtype=torch.float64)
    # log p(x) = log of the double integral over z1 (2-D) and z2 (1-D) on a grid
    g1 = torch.linspace(-7, 7, 81, dtype=torch.float64)
    g2 = torch.linspace(-7, 7, 81, dtype=torch.float64)
    z1 = torch.cartesian_prod(g1, g1)                                         # (6561, 2)
    with torch.no_grad():
        pm, plv = model.prior_z1(g2[:, None])                                 # (81, 2)
        log_p_z1_z2 = gaussian_log_prob(z1[None], pm[:, None], plv[:, None]) + gaussian_log_prob(g2[:, None])[:, None]
        logits = model.decoder(z1)                                            # (6561, 9)
        log_px = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits[None].expand(3, -1, -1), x.flatten(1)[:, None].expand(-1, z1.shape[0], -1),
            reduction="none").sum(-1)                                         # (3, 6561)
        cell = math.log((g1[1] - g1[0]) ** 2 * (g2[1] - g2[0]))
        log_p_z1 = torch.logsumexp(log_p_z1_z2, 0)                            # (6561,)
        log_px_true = torch.logsumexp(log_px + log_p_z1, 1) + cell
        l1 = model.iwae_bound(x, 1, torch.Generator().manual_seed(0))
        log_w = model.log_weights(x, 20_000, torch.Generator().manual_seed(1))   # (20000, 3)
        elbo = log_w.mean()
        l10 = (torch.logsumexp(log_w.reshape(2000, 10, 3), 1) - math.log(10)).mean()
        l1000 = model.iwae_bound(x, 1000, torch.Generator().manual_seed(2)).mean()
    truth = float(log_px_true.mean())
    assert elbo < l10 < l1000 <= truth + 0.02
    assert truth - l1000 < 0.1 < truth - elbo  # the bound tightens from the ELBO towards log p(x)
    assert l1.shape == (3,)


def test_samples_and_errors():
    model = tiny()
    assert model.sample(5, generator=torch.Generator().manual_seed(0)).shape == (5, 1, 3, 3)
    with pytest.raises(ValueError, match="expects x of shape"):
        model.loss(torch.rand(2, 9))
    with pytest.raises(ValueError, match="z2_dim must be an int >= 1"):
        HierarchicalVAE(z2_dim=0)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        model.log_weights(torch.rand(2, 1, 3, 3), 0)


def test_the_vae_recipe_trains_it(mnist):
    cfg = recipe.Config(family="hvae", hidden=[32], z_dim=4, z2_dim=2, epochs=0.25, batch_size=128,
                        train_size=2000)
    model = recipe.build_model(cfg)
    assert isinstance(model, HierarchicalVAE)
    history = recipe.train(cfg, model, progress=False)
    assert history["loss"][-1] < history["loss"][0]
    out = recipe.evaluate(cfg, model)
    assert out["kl"] > 0 and out["loss"] == pytest.approx(out["recon"] + out["kl"])
    with pytest.raises(ValueError, match="z2_dim must be >= 1"):
        recipe.Config(family="hvae", z2_dim=0)
