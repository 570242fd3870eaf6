"""Tests for companion.probes: the linear probe's fit, accuracy on known cases, few labels, GPT states."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from companion.probes import (
    few_per_class,
    fit_linear_probe,
    gpt_hidden_states,
    label_efficiency,
    probe_accuracy,
)


def _blobs(n, d, C, noise, seed):
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(C, d, generator=torch.Generator().manual_seed(99))
    y = torch.randint(0, C, (n,), generator=g)
    return centres[y] + noise * torch.randn(n, d, generator=g), y


def test_fit_reaches_the_optimum_of_the_regularised_objective():
    x, y = _blobs(300, 5, 3, 2.0, 0)
    lam = 1e-2
    probe = fit_linear_probe(x, y, weight_decay=lam)
    W = probe.weight.clone().requires_grad_(True)
    b = probe.bias.clone().requires_grad_(True)
    h = (x.double() - probe.mu) / probe.sigma
    loss = F.cross_entropy(h @ W.T + b, y) + 0.5 * lam * W.pow(2).sum()
    gW, gb = torch.autograd.grad(loss, (W, b))
    assert gW.abs().max() < 1e-6 and gb.abs().max() < 1e-6


def test_separable_classes_are_probed_perfectly_and_noise_at_chance():
    x, y = _blobs(600, 8, 4, 0.1, 0)
    xt, yt = _blobs(400, 8, 4, 0.1, 1)
    assert probe_accuracy(x, y, xt, yt) == 1.0
    g = torch.Generator().manual_seed(2)
    noise, noise_t = torch.randn(600, 8, generator=g), torch.randn(400, 8, generator=g)
    assert probe_accuracy(noise, y, noise_t, yt) < 0.4  # 4 classes: chance is about 0.25


def test_the_probe_does_not_depend_on_a_seed_and_standardises():
    x, y = _blobs(200, 4, 3, 1.0, 0)
    a, b = fit_linear_probe(x, y), fit_linear_probe(x, y)
    assert torch.equal(a.weight, b.weight)
    scaled = fit_linear_probe(x * torch.tensor([1.0, 100.0, 0.01, 5.0]), y)  # per-feature scale is undone
    torch.testing.assert_close(scaled.weight, a.weight, atol=1e-5, rtol=1e-5)


def test_few_per_class_and_label_efficiency():
    x, y = _blobs(500, 6, 5, 1.5, 0)
    xt, yt = _blobs(500, 6, 5, 1.5, 1)
    idx = few_per_class(y, 3, torch.Generator().manual_seed(0))
    assert idx.numel() == 15 and torch.bincount(y[idx]).tolist() == [3] * 5 and idx.unique().numel() == 15
    eff = label_efficiency(x, y, xt, yt, per_class=[1, 50], repeats=2)
    assert set(eff) == {1, 50} and eff[50] >= eff[1] - 0.02 and eff[50] > 0.8
    with pytest.raises(ValueError, match="fewer than k"):
        few_per_class(y, 1000)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        fit_linear_probe(torch.zeros(5), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="long tensor"):
        fit_linear_probe(torch.zeros(5, 2), torch.zeros(5))
    with pytest.raises(ValueError, match="n_classes"):
        fit_linear_probe(torch.zeros(3, 2), torch.tensor([0, 1, 2]), n_classes=2)


def test_gpt_hidden_states_are_what_the_output_layer_reads():
    from companion.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16))
    idx = torch.randint(0, 11, (3, 8))
    h = gpt_hidden_states(model, idx)
    assert h.shape == (3, 8, 16)
    logits, _ = model.eval()(idx)
    torch.testing.assert_close(model.lm_head(h), logits)
    with pytest.raises(ValueError, match="ln_f"):
        gpt_hidden_states(torch.nn.Linear(2, 2), idx)
