"""Tests of companion.vqvae (chapter "Variational autoencoders", notebook 05_3)."""

from __future__ import annotations

import pytest
import torch

from companion.vae import bernoulli_nll
from companion.vqvae import VQVAE, VectorQuantizer, check_perplexity, codebook_perplexity


def images(n, seed=0, shape=(1, 6, 6)):
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


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


def test_perplexity_checker_accepts_the_right_answer_and_rejects_counting_codes(capsys):
    assert check_perplexity(lambda idx, k: float(codebook_perplexity(idx, k)))
    assert not check_perplexity(lambda idx, k: float(len(set(idx.tolist()))))  # counts codes used
    out = capsys.readouterr().out
    assert "Correct" in out and "Not yet" in out
