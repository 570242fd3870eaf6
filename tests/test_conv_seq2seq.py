"""Tests for companion.conv_seq2seq: causality, the receptive field, the layout, the seq2seq interface."""

from __future__ import annotations

import pytest
import torch

from companion.conv_seq2seq import CausalConv1d, ConvSeq2Seq, left_align, receptive_field
from companion.seq2seq import BOS, EOS, PAD, DigitTask, evaluate_seq2seq


def test_left_align_moves_tokens_to_the_right_edge_in_order():
    src = torch.tensor([[5, 6, 7, PAD, PAD], [3, 4, 5, 6, 7], [9, PAD, PAD, PAD, PAD]])
    assert left_align(src).tolist() == [[PAD, PAD, 5, 6, 7], [3, 4, 5, 6, 7], [PAD, PAD, PAD, PAD, 9]]


def test_causal_conv_output_ignores_the_future():
    torch.manual_seed(0)
    conv = CausalConv1d(3, 4, kernel_size=3, dilation=2)
    x = torch.randn(2, 10, 3)
    y = conv(x)
    x2 = x.clone()
    x2[:, 6:] = torch.randn(2, 4, 3)  # change the future of position 5
    y2 = conv(x2)
    assert y.shape == (2, 10, 4)
    assert torch.allclose(y[:, :6], y2[:, :6])
    assert not torch.allclose(y[:, 6:], y2[:, 6:])


@pytest.mark.parametrize(("kernel_size", "n_layers"), [(2, 3), (3, 2), (2, 5)])
def test_receptive_field_is_exactly_the_positions_with_a_gradient(kernel_size, n_layers):
    """R = 1 + (k - 1) sum(d): the output at t depends on inputs t-R+1 .. t and on nothing else."""
    torch.manual_seed(0)
    dilations = [2**i for i in range(n_layers)]
    stack = torch.nn.Sequential(*(CausalConv1d(4, 4, kernel_size, d) for d in dilations)).double()
    x = torch.randn(1, 40, 4, dtype=torch.float64, requires_grad=True)
    t = 39
    stack(x)[0, t].sum().backward()
    seen = (x.grad[0].abs().sum(1) > 0).nonzero().flatten().tolist()
    R = receptive_field(kernel_size, dilations)
    assert seen == list(range(t - R + 1, t + 1))


def test_receptive_field_formula_and_bad_values():
    assert receptive_field(2, [1, 2, 4, 8, 16]) == 32
    assert receptive_field(3, [1, 1]) == 5
    with pytest.raises(ValueError, match="kernel_size"):
        receptive_field(0, [1])


def test_model_logits_do_not_see_later_answer_tokens():
    torch.manual_seed(0)
    model = ConvSeq2Seq(max_src_len=6, max_tgt_len=8, d_model=16, n_layers=4).eval()
    src, tgt = DigitTask("reverse", 2, 6).sample(4, torch.Generator().manual_seed(1))
    tgt_in = tgt[:, :-1]
    logits = model(src, tgt_in)
    assert logits.shape == (4, 7, 13)
    changed = tgt_in.clone()
    changed[:, 4:] = EOS
    assert torch.allclose(model(src, changed)[:, :4], logits[:, :4], atol=1e-6)


def test_a_source_token_outside_the_receptive_field_cannot_change_the_output():
    torch.manual_seed(0)
    model = ConvSeq2Seq(max_src_len=12, max_tgt_len=13, d_model=16, n_layers=3).eval()  # R = 8
    assert model.receptive_field == 8
    src = torch.randint(3, 13, (1, 12))
    tgt_in = torch.full((1, 6), BOS)
    # output position 5 of the answer sits at 12 + 5 = 17 in the joint sequence; it sees 10 .. 17
    src2 = src.clone()
    src2[0, :10] = torch.randint(3, 13, (10,))
    changed_far = model(src2, tgt_in)[0, 5]
    assert torch.allclose(changed_far, model(src, tgt_in)[0, 5], atol=1e-6)
    src3 = src.clone()
    src3[0, 11] = 3 + (int(src[0, 11]) - 3 + 1) % 10
    assert not torch.allclose(model(src3, tgt_in)[0, 5], model(src, tgt_in)[0, 5], atol=1e-6)


def test_greedy_decode_has_the_interface_of_the_other_models():
    torch.manual_seed(0)
    model = ConvSeq2Seq(max_src_len=5, max_tgt_len=6, d_model=8, n_layers=2)
    src, tgt = DigitTask("reverse", 1, 5).sample(10, torch.Generator().manual_seed(0))
    out = model.greedy_decode(src, max_len=6, bos_id=BOS, eos_id=EOS)
    assert out.shape[0] == 10 and out.shape[1] <= 6 and out.dtype == torch.long
    assert model.training  # restored
    metrics = evaluate_seq2seq(model, src, tgt)
    assert 0.0 <= metrics["exact_acc"] <= 1.0 and 0.0 <= metrics["token_acc"] <= 1.0


def test_bad_input_is_named():
    model = ConvSeq2Seq(max_src_len=5, max_tgt_len=6, d_model=8, n_layers=2)
    with pytest.raises(ValueError, match="src must have 5 positions"):
        model(torch.full((1, 4), 3), torch.full((1, 1), BOS))
    with pytest.raises(ValueError, match="only of padding"):
        model(torch.full((1, 5), PAD), torch.full((1, 1), BOS))
    with pytest.raises(ValueError, match="more than the 6"):
        model(torch.full((1, 5), 3), torch.full((1, 7), BOS))
    with pytest.raises(ValueError, match="must be >= 1"):
        ConvSeq2Seq(d_model=0)


def test_recipe_builds_and_trains_the_cnn_briefly():
    from dataclasses import replace

    from companion.recipes import transformer as recipe

    cfg = replace(recipe.Config(), arch="conv", steps=30, max_len=6, conv_channels=16, conv_layers=3)
    model = recipe.build_model(cfg)
    assert isinstance(model, ConvSeq2Seq)
    history = recipe.train(cfg, model, progress=False)
    assert len(history["loss"]) == 30 and history["loss"][-1] < history["loss"][0]
    with pytest.raises(ValueError, match="'conv'"):
        recipe.build_model(replace(cfg, arch="cnn"))
