"""Tests of companion.autoencoder: the VAE's networks without noise or KL (chapter "A VAE on MNIST")."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from companion.autoencoder import Autoencoder, check_autoencoder_loss
from companion.recipes import vae as recipe
from companion.vae import VAE


def test_the_loss_is_the_reconstruction_at_the_code_and_deterministic():
    torch.manual_seed(0)
    ae = Autoencoder((1, 4, 4), hidden=(8,), z_dim=3)
    x = torch.rand(6, 1, 4, 4)
    z, _ = ae.encode(x)
    want = F.binary_cross_entropy_with_logits(ae.decode(z), x, reduction="sum") / 6
    terms = ae.loss(x, beta=5.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(terms.loss, want)
    torch.testing.assert_close(terms.recon, want)
    assert float(terms.kl) == 0.0
    torch.testing.assert_close(ae.loss(x).loss, terms.loss)  # no noise: the same value every call
    assert ae.loss(x, reduction="none").loss.shape == (6,)


def test_it_has_exactly_the_vaes_networks():
    ae, vae = Autoencoder(hidden=(16,), z_dim=4), VAE(hidden=(16,), z_dim=4)
    assert [p.shape for p in ae.parameters()] == [p.shape for p in vae.parameters()]


def test_the_vae_recipe_trains_it_and_its_loss_falls(mnist):
    cfg = recipe.Config(family="ae", z_dim=2, hidden=[32], epochs=0.25, batch_size=128, train_size=2000)
    model = recipe.build_model(cfg)
    assert isinstance(model, Autoencoder)
    history = recipe.train(cfg, model, progress=False)
    assert history["loss"][-1] < history["loss"][0] and set(history["kl"]) == {0.0}
    out = recipe.evaluate(cfg, model)
    assert out["kl"] == 0.0 and out["loss"] == pytest.approx(out["recon"])
    assert recipe.sample(cfg, model, 3).shape == (3, 1, 28, 28)


def test_the_checker_accepts_the_loss_and_names_the_usual_mistakes(capsys):
    assert check_autoencoder_loss(lambda m, x: m.loss(x).loss)
    assert not check_autoencoder_loss(
        lambda m, x: F.binary_cross_entropy_with_logits(m.decode(m.encode(x)[0]).reshape(x.shape), x)
    )
    assert "mean over pixels" in capsys.readouterr().out
    assert not check_autoencoder_loss(lambda m, x: VAE.loss(m, x).loss)  # the VAE's noisy loss with KL


def test_the_adversarial_autoencoder_pulls_its_codes_towards_the_prior(mnist):
    from companion.autoencoder import AdversarialAutoencoder
    from companion.metrics import frechet_distance

    base = dict(z_dim=2, hidden=[64], epochs=2.0, batch_size=128, train_size=2000, lr=2e-3)
    codes = {}
    for family in ("ae", "aae"):
        cfg = recipe.Config(family=family, **base)
        model = recipe.build_model(cfg)
        history = recipe.train(cfg, model, progress=False)
        x, _ = recipe._train_data(cfg)
        with torch.no_grad():
            z, _ = model.encode(x)
        codes[family] = frechet_distance(z.mean(0), torch.cov(z.T), torch.zeros(2), torch.eye(2))
    assert isinstance(model, AdversarialAutoencoder) and set(history.metrics) >= {"d_loss", "g_loss", "recon"}
    # the plain codes drift far from N(0, I); the critic keeps the adversarial ones close
    assert codes["aae"] < 0.2 * codes["ae"]


def test_the_critic_does_not_train_the_encoder():
    from companion.autoencoder import AdversarialAutoencoder

    torch.manual_seed(0)
    model = AdversarialAutoencoder((1, 4, 4), hidden=(8,), z_dim=2, critic_hidden=8)
    model.critic_loss(torch.rand(5, 1, 4, 4)).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("critic."))
    assert all(p.grad is not None for p in model.critic.parameters())
