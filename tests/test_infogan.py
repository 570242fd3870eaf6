"""InfoGAN: the categorical code, the mutual-information bound, and the GAN that uses them."""

import math

import pytest
import torch

from companion import gan_networks, infogan
from companion.recipes import gan as recipe


def test_sample_codes_are_one_hot_uniform_and_seeded():
    onehot, c = infogan.sample_codes(60_000, 10, torch.Generator().manual_seed(0))
    assert onehot.shape == (60_000, 10) and c.shape == (60_000,)
    assert torch.equal(onehot.argmax(1), c) and torch.equal(onehot.sum(1), torch.ones(60_000))
    shares = torch.bincount(c, minlength=10) / 60_000
    assert (shares - 0.1).abs().max() < 0.006  # 5 standard errors of a share at n = 60,000
    again = infogan.sample_codes(60_000, 10, torch.Generator().manual_seed(0))[1]
    assert torch.equal(c, again)
    with pytest.raises(ValueError, match="k >= 1"):
        infogan.sample_codes(3, 0)


def _joint():
    """A joint p(c, x) over 3 uniform codes and 4 values of x, as integer counts (one row per pair)."""
    counts = torch.tensor([[6, 2, 1, 1], [1, 5, 3, 1], [2, 2, 2, 4]])  # every row sums to 10: p(c) = 1/3
    c = torch.repeat_interleave(torch.arange(3), counts.sum(1))
    x = torch.cat([torch.repeat_interleave(torch.arange(4), row) for row in counts])
    p = counts.double() / counts.sum()
    mi = (p * (p / (p.sum(1, keepdim=True) * p.sum(0, keepdim=True))).log()).sum()
    posterior = p / p.sum(0, keepdim=True)  # p(c | x), columns sum to one
    return c, x, posterior, float(mi)


def test_the_bound_equals_the_mutual_information_when_q_is_the_posterior():
    c, x, posterior, mi = _joint()
    logits = posterior.T.log()[x]  # Q(c | x) = p(c | x)
    assert float(infogan.mutual_information_bound(logits, c)) == pytest.approx(mi, abs=1e-9)


def test_the_bound_is_below_the_mutual_information_for_any_other_q():
    c, x, _, mi = _joint()
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = torch.randn(4, 3, generator=gen, dtype=torch.float64)[x]
        assert float(infogan.mutual_information_bound(logits, c)) < mi - 1e-3


def test_the_bound_is_log_k_for_a_certain_q_and_zero_for_a_blind_one():
    c = torch.arange(5)
    certain = torch.full((5, 5), -50.0).fill_diagonal_(50.0)
    assert float(infogan.mutual_information_bound(certain, c)) == pytest.approx(math.log(5), abs=1e-6)
    assert float(infogan.mutual_information_bound(torch.zeros(5, 5), c)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        infogan.info_loss(torch.zeros(5, 5), torch.arange(4))


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_an_infogan_reads_a_one_hot_code_and_its_discriminator_returns_code_logits(arch):
    model = recipe.build_model(recipe.Config(data="mnist", arch=arch, info_codes=10))
    assert model.n_codes == 10 and model.latent_dim == 64 and model.n_classes == 0
    z, c = model.sample_latent(6, torch.Generator().manual_seed(0))
    assert z.shape == (6, 74) and torch.equal(z[:, 64:].argmax(1), c)
    x = model.generator(z)
    scores, code_logits = model.discriminator(x, codes=True)
    assert scores.shape == (6,) and code_logits.shape == (6, 10)
    assert torch.equal(model.discriminator(x), scores)
    assert model.sample(4, generator=torch.Generator().manual_seed(1)).shape == (4, 1, 28, 28)


def test_infogan_bad_settings_are_named():
    with pytest.raises(ValueError, match="unconditional"):
        recipe.Config(data="mnist", conditional=True, info_codes=10)
    with pytest.raises(ValueError, match="info_codes"):
        recipe.Config(info_codes=-1)
    with pytest.raises(ValueError, match="info_weight must be > 0"):
        recipe.Config(info_codes=8, info_weight=0.0)
    plain = recipe.build_model(recipe.Config(data="mnist", arch="mlp"))
    with pytest.raises(ValueError, match="no code head"):
        plain.discriminator(torch.zeros(2, 1, 28, 28), codes=True)
    with pytest.raises(ValueError, match="n_codes=10"):
        gan_networks.GAN(gan_networks.MLPGenerator(74), gan_networks.MLPDiscriminator(), n_codes=10)


def test_an_infogan_on_the_ring_learns_to_read_its_code_back():
    """Trained briefly on the 8-mode ring with 8 codes, Q recovers most of the code's log 8 nats."""
    cfg = recipe.Config(data="ring", info_codes=8, steps=400, seed=0)
    model = recipe.build_model(cfg)
    history = recipe.train(cfg, model, progress=False)
    bound = history.metrics["info_bound"]
    assert len(bound) == 400 and max(bound) <= math.log(8) + 1e-6
    assert sum(bound[:20]) / 20 < 0.5 * math.log(8) < sum(bound[-50:]) / 50
