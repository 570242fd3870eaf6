"""Tests for companion.transformer: layers, the encoder-decoder, greedy decoding, loss and schedule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.recipes import transformer as recipe
from companion.seq2seq import BOS, EOS, PAD, VOCAB_SIZE
from companion.train import warmup_schedule
from companion.transformer import (
    DecoderLayer,
    EncoderLayer,
    Transformer,
    check_label_smoothing,
    grad_norms_by_layer,
    label_smoothing_cross_entropy,
    noam_lr,
)


def _model(norm_first=False, **kw):
    torch.manual_seed(0)
    return Transformer(VOCAB_SIZE, VOCAB_SIZE, d_model=16, n_heads=2, n_encoder_layers=2, n_decoder_layers=2,
                       d_ff=32, max_len=12, norm_first=norm_first, **kw).eval()


def _batch(B=3, T_s=6, T_t=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, VOCAB_SIZE, (B, T_s), generator=g)
    tgt = torch.randint(3, VOCAB_SIZE, (B, T_t), generator=g)
    tgt[:, 0] = BOS
    return src, tgt


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_outputs_one_vector_per_position_not_a_fixed_length_vector(norm_first):
    m = _model(norm_first)
    for T in (3, 9):
        memory, _ = m.encode(_batch(T_s=T)[0])
        assert memory.shape == (3, T, 16)


@pytest.mark.parametrize("norm_first", [False, True])
def test_forward_shapes_and_attention_weights(norm_first):
    m = _model(norm_first)
    src, tgt = _batch()
    assert m(src, tgt).shape == (3, 7, VOCAB_SIZE)
    w = m.attention_weights(src, tgt)
    assert [x.shape for x in w["encoder"]] == [(3, 2, 6, 6)] * 2
    assert [x.shape for x in w["decoder_self"]] == [(3, 2, 7, 7)] * 2
    assert [x.shape for x in w["cross"]] == [(3, 2, 7, 6)] * 2
    for x in w["encoder"] + w["decoder_self"] + w["cross"]:
        torch.testing.assert_close(x.sum(-1), torch.ones(x.shape[:-1]), atol=1e-5, rtol=0)
    for x in w["decoder_self"]:
        assert (x.triu(1) == 0).all(), "decoder self-attention looked at a future position"


def test_fast_path_and_weight_path_give_the_same_logits():
    m = _model()
    src, tgt = _batch()
    memory, _ = m.encode(src, need_weights=True)
    logits_slow, _, _ = m.decode(tgt, memory, src, need_weights=True)
    torch.testing.assert_close(m(src, tgt), logits_slow, atol=1e-5, rtol=1e-5)


@settings(max_examples=15, deadline=None)
@given(t=st.integers(0, 5), seed=st.integers(0, 1000))
def test_decoder_never_sees_future_target_tokens(t, seed):
    m = _model(norm_first=bool(seed % 2))
    src, tgt = _batch(seed=seed)
    tgt2 = tgt.clone()
    tgt2[:, t + 1 :] = torch.randint(3, VOCAB_SIZE, tgt2[:, t + 1 :].shape)
    torch.testing.assert_close(m(src, tgt)[:, : t + 1], m(src, tgt2)[:, : t + 1], atol=1e-5, rtol=0)


def test_padding_does_not_change_the_output():
    """Extra PAD columns on the source or the target change nothing at the real positions."""
    m = _model()
    src, tgt = _batch(T_s=5, T_t=6)
    src_pad = torch.cat([src, torch.full((3, 3), PAD)], 1)
    tgt_pad = torch.cat([tgt, torch.full((3, 2), PAD)], 1)
    torch.testing.assert_close(m(src_pad, tgt_pad)[:, :6], m(src, tgt), atol=1e-5, rtol=1e-5)
    # one source shorter than the others: its padding is ignored
    short = src.clone()
    short[0, 3:] = PAD
    torch.testing.assert_close(m(short, tgt)[0], m(short[:1, :3], tgt[:1])[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_is_permutation_equivariant_without_positions(norm_first):
    torch.manual_seed(0)
    layer = EncoderLayer(16, 4, 32, norm_first=norm_first).eval()
    x = torch.randn(2, 7, 16)
    perm = torch.randperm(7)
    torch.testing.assert_close(layer(x[:, perm])[0], layer(x)[0][:, perm], atol=1e-5, rtol=1e-5)


def test_transformer_encoder_with_positional_encoding_is_not_permutation_equivariant():
    m = _model()
    src = torch.tensor([[3, 4, 5, 6, 7]])
    perm = torch.tensor([4, 3, 2, 1, 0])
    a, _ = m.encode(src[:, perm])
    b, _ = m.encode(src)
    assert not torch.allclose(a, b[:, perm], atol=1e-3)


def test_post_ln_layer_output_is_normalised_and_pre_ln_is_not():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16) * 3 + 1
    mem = torch.randn(2, 4, 16)
    post_ln = ((EncoderLayer(16, 2, 32, norm_first=False), None), (DecoderLayer(16, 2, 32, norm_first=False), mem))
    for layer, out in post_ln:
        y = layer(x)[0] if out is None else layer(x, out)[0]
        torch.testing.assert_close(y.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
        torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(2, 5), atol=1e-3, rtol=0)
    y = EncoderLayer(16, 2, 32, norm_first=True)(x)[0]
    assert y.mean(-1).abs().max() > 0.1, "pre-LN keeps the un-normalised residual stream"


def test_greedy_decode_agrees_with_teacher_forcing_on_its_own_output():
    """Each generated token is the arg-max of the model given the tokens before it."""
    m = _model(norm_first=True)
    src, _ = _batch(T_s=5)
    out = m.greedy_decode(src, max_len=6, bos_id=BOS, eos_id=EOS)
    assert out.shape[0] == 3 and out.shape[1] <= 6
    tgt_in = torch.cat([torch.full((3, 1), BOS), out], 1)
    pred = m(src, tgt_in).argmax(-1)[:, : out.shape[1]]
    for b in range(3):
        row = out[b].tolist()
        n = row.index(EOS) + 1 if EOS in row else len(row)
        assert pred[b, :n].tolist() == row[:n]
        assert all(t == PAD for t in row[n:])


def test_greedy_decode_stops_at_eos():
    m = _model()
    with torch.no_grad():  # rig the output layer to always say EOS
        m.generator.weight.zero_()
        m.generator.bias.fill_(-10.0)
        m.generator.bias[EOS] = 10.0
    out = m.greedy_decode(_batch()[0], max_len=6, bos_id=BOS, eos_id=EOS)
    assert out.tolist() == [[EOS]] * 3


def test_sequences_longer_than_the_positional_table_raise():
    m = _model()
    with pytest.raises(ValueError, match="13 positions but the positional table has only max_len = 12"):
        m.encode(torch.full((1, 13), 5))


def test_learned_positional_variant_and_bad_arguments():
    m = _model(positional="learned")
    src, tgt = _batch()
    assert m(src, tgt).shape == (3, 7, VOCAB_SIZE)
    with pytest.raises(ValueError, match="positional"):
        _model(positional="rotary")
    with pytest.raises(ValueError, match="token ids"):
        m.encode(torch.randn(2, 3))
    with pytest.raises(ValueError, match="only of padding"):
        m.encode(torch.tensor([[PAD, PAD], [3, 4]]))


# ----------------------------------------------------------------------------- loss and schedule


@settings(max_examples=30, deadline=None)
@given(eps=st.floats(0.0, 1.0), K=st.integers(2, 9), N=st.integers(1, 12), seed=st.integers(0, 1000))
def test_label_smoothing_equals_torch_label_smoothing(eps, K, N, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, K, generator=g, dtype=torch.float64) * 3
    target = torch.randint(0, K, (N,), generator=g)
    target[0] = 0  # keep one real target
    ignore = 0 if N > 1 and seed % 2 else -100
    if ignore == 0:
        target[0] = 1
    ours = label_smoothing_cross_entropy(logits, target, eps, ignore_index=ignore)
    ref = F.cross_entropy(logits, target, label_smoothing=eps, ignore_index=ignore)
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)


def test_label_smoothing_is_cross_entropy_with_the_smoothed_target_distribution():
    torch.manual_seed(0)
    logits, target, eps, K = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 3, 1, 1, 2]), 0.2, 4
    q = torch.full((5, K), eps / K, dtype=torch.float64)
    q[torch.arange(5), target] += 1 - eps
    expected = -(q * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(label_smoothing_cross_entropy(logits, target, eps), expected)


def test_label_smoothing_rejects_bad_input():
    with pytest.raises(ValueError, match="epsilon"):
        label_smoothing_cross_entropy(torch.randn(3, 4), torch.tensor([0, 1, 2]), 1.5)
    with pytest.raises(ValueError, match="every target is ignore_index"):
        label_smoothing_cross_entropy(torch.randn(2, 4), torch.tensor([0, 0]), 0.1, ignore_index=0)


def test_noam_schedule_rises_linearly_peaks_at_warmup_then_decays_as_inverse_sqrt():
    d, w = 512, 4000
    assert noam_lr(1, d, w) == pytest.approx(d**-0.5 * w**-1.5)
    assert noam_lr(2000, d, w) == pytest.approx(2000 * noam_lr(1, d, w))
    peak = noam_lr(w, d, w)
    assert peak == pytest.approx(d**-0.5 * w**-0.5)
    assert max(noam_lr(s, d, w) for s in range(1, 3 * w, 97)) <= peak
    assert noam_lr(4 * w, d, w) == pytest.approx(peak / 2)


def test_warmup_schedule_linear_then_cosine_or_inverse_sqrt():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = warmup_schedule(opt, warmup_steps=10, total_steps=30)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lrs[19] == pytest.approx(0.5 * (1 + math.cos(math.pi * 10 / 20)))
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    opt2 = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched2 = warmup_schedule(opt2, warmup_steps=10)
    for s in range(1, 50):
        assert opt2.param_groups[0]["lr"] == pytest.approx(noam_lr(s, 64, 10) / noam_lr(10, 64, 10))
        opt2.step()
        sched2.step()


def test_grad_norms_by_layer_reports_every_layer():
    m = _model().train()
    src, tgt = _batch()
    m(src, tgt).sum().backward()
    norms = grad_norms_by_layer(m)
    assert list(norms) == ["encoder.0", "encoder.1", "decoder.0", "decoder.1"]
    assert all(v > 0 for v in norms.values())


def test_check_label_smoothing(capsys):
    assert check_label_smoothing(label_smoothing_cross_entropy)
    assert check_label_smoothing(lambda lg, t, e: F.cross_entropy(lg, t, label_smoothing=e))
    assert not check_label_smoothing(lambda lg, t, e: F.cross_entropy(lg, t))
    # smoothing over the K - 1 wrong classes only (a common variant) is a different loss
    k_minus_1 = lambda lg, t, e: F.cross_entropy(lg, t, label_smoothing=e * lg.shape[1] / (lg.shape[1] - 1))  # noqa: E731
    assert not check_label_smoothing(k_minus_1)
    assert "Not yet:" in capsys.readouterr().out


# ----------------------------------------------------------------------------- recipe


def test_recipe_builds_the_same_model_for_the_same_seed_and_keeps_global_rng():
    cfg = recipe.Config()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = recipe.build_model(cfg), recipe.build_model(cfg)
    assert torch.rand(1) == before, "build_model must not consume the caller's RNG"
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.slow
def test_recipe_learns_short_reversals():
    cfg = recipe.Config(max_len=4, steps=250, n_layers=1, n_test=200)
    model = recipe.build_model(cfg)
    before = recipe.evaluate(cfg, model)["exact_acc"]
    history = recipe.train(cfg, model, progress=False)
    after = recipe.evaluate(cfg, model)
    assert history.last("loss", 20) < history.last("loss") + 1 and history["loss"][-1] < history["loss"][0] / 5
    assert before < 0.2 and after["exact_acc"] > 0.95, (before, after)
    lines = recipe.sample(cfg, model, 4, torch.Generator().manual_seed(0))
    assert len(lines) == 4
    for line in lines:  # "3 1 4  ->  4 1 3 </s>": the output is the reversed input
        source, output = line.split("  ->  ")
        assert output.split() == source.split()[::-1] + ["</s>"]
