"""Tests for companion.seq2seq: the digit tasks, the held-out split, accuracy, the LSTM baseline."""

from __future__ import annotations

import pytest
import torch

from companion.seq2seq import (
    BOS,
    EOS,
    N_SPECIAL,
    PAD,
    DigitTask,
    LSTMSeq2Seq,
    attention_offset_profile,
    exact_sequence_accuracy,
    is_held_out,
    str_to_tokens,
    time_per_step,
    tokens_to_str,
)


@pytest.mark.parametrize("task", ["reverse", "sort"])
def test_targets_are_the_reversed_or_sorted_source_between_bos_and_eos(task):
    t = DigitTask(task, 1, 6)
    src, tgt = t.sample(200, torch.Generator().manual_seed(0))
    assert src.shape == (200, 6) and tgt.shape == (200, 8)
    for s, y in zip(src.tolist(), tgt.tolist(), strict=True):
        digits = [x - N_SPECIAL for x in s if x != PAD]
        n = len(digits)
        assert 1 <= n <= 6 and s[n:] == [PAD] * (6 - n), "padding only at the end"
        answer = digits[::-1] if task == "reverse" else sorted(digits)
        assert y == [BOS] + [a + N_SPECIAL for a in answer] + [EOS] + [PAD] * (6 - n)


def test_train_and_test_splits_are_disjoint_and_test_is_about_ten_percent():
    t = DigitTask("reverse", 3, 7)
    g = torch.Generator().manual_seed(0)
    train_src, _ = t.sample(3000, g, split="train")
    test_src, _ = t.sample(500, g, split="test")
    assert not is_held_out(train_src).any() and is_held_out(test_src).all()
    train_set = {tuple(r) for r in train_src.tolist()}
    assert not train_set & {tuple(r) for r in test_src.tolist()}
    raw = t._raw(20_000, torch.Generator().manual_seed(1), None)
    assert 0.08 < is_held_out(raw).float().mean().item() < 0.12


def test_held_out_membership_does_not_depend_on_padding_width():
    src = DigitTask("reverse", 1, 5).sample(300, torch.Generator().manual_seed(2))[0]
    wider = torch.cat([src, torch.full((300, 4), PAD)], 1)
    assert torch.equal(is_held_out(src), is_held_out(wider))


def test_fixed_length_sampling():
    src, _ = DigitTask("reverse", 2, 9).sample(50, torch.Generator().manual_seed(0), split="test", length=4)
    assert ((src != PAD).sum(1) == 4).all()
    with pytest.raises(ValueError, match="length must lie in"):
        DigitTask("reverse", 2, 9).sample(5, length=10)
    with pytest.raises(ValueError, match="task must be"):
        DigitTask("copy")


def test_exact_sequence_accuracy_counts_whole_sequences_up_to_eos():
    tgt = torch.tensor([[5, 6, EOS, PAD], [7, EOS, PAD, PAD], [4, 4, 4, EOS]])
    pred = torch.tensor([[5, 6, EOS, 9],  # right; what follows EOS does not matter
                         [7, 8, EOS, PAD],  # EOS missing at position 1: wrong
                         [4, 4, 4, 4]])  # no EOS: wrong
    assert exact_sequence_accuracy(pred, tgt, per_example=True).tolist() == [True, False, False]
    assert exact_sequence_accuracy(pred, tgt) == pytest.approx(1 / 3)
    assert exact_sequence_accuracy(pred[:, :2], tgt) == 0.0, "a too-short output is wrong"
    with pytest.raises(ValueError, match="EOS"):
        exact_sequence_accuracy(pred, torch.full((3, 4), 5))


def test_token_strings_round_trip():
    toks = str_to_tokens("3 1 4")
    assert tokens_to_str(torch.cat([torch.tensor([BOS]), toks, torch.tensor([EOS, PAD])])) == "3 1 4 </s>"
    assert torch.equal(str_to_tokens("314"), toks)
    with pytest.raises(ValueError, match="digits"):
        str_to_tokens("3a")


@pytest.mark.parametrize("attention", [False, True])
def test_lstm_ignores_padding_and_greedy_decode_matches_teacher_forcing(attention):
    torch.manual_seed(0)
    m = LSTMSeq2Seq(d_embed=8, d_hidden=16, attention=attention).eval()
    src, tgt = DigitTask("reverse", 2, 5).sample(4, torch.Generator().manual_seed(0))
    wider = torch.cat([src, torch.full((4, 3), PAD)], 1)
    torch.testing.assert_close(m(wider, tgt[:, :-1]), m(src, tgt[:, :-1]), atol=1e-6, rtol=1e-5)
    out = m.greedy_decode(src, max_len=6, bos_id=BOS, eos_id=EOS)
    pred = m(src, torch.cat([torch.full((4, 1), BOS), out], 1)).argmax(-1)
    for b in range(4):
        row = out[b].tolist()
        n = row.index(EOS) + 1 if EOS in row else len(row)
        assert pred[b, :n].tolist() == row[:n]


def test_lstm_without_attention_sees_the_source_only_through_its_final_state():
    """Swap the encoder's final state between two inputs: the decoder's output follows the state."""
    torch.manual_seed(0)
    m = LSTMSeq2Seq(d_embed=8, d_hidden=16, attention=False).eval()
    src = torch.tensor([[3, 4, 5], [9, 8, 7]])
    tgt_in = torch.tensor([[BOS, 5, 4], [BOS, 5, 4]])
    _, state = m.encode(src)
    h, _ = m.decoder(m.tgt_embed(tgt_in), (state[0].flip(1), state[1].flip(1)))
    torch.testing.assert_close(m.generator(h), m(src.flip(0), tgt_in))


def test_time_per_step_is_positive():
    m = LSTMSeq2Seq(d_embed=8, d_hidden=8)
    src, tgt = DigitTask("reverse", 2, 4).sample(8, torch.Generator().manual_seed(0))
    assert time_per_step(m, src, tgt, repeats=2) > 0


def test_attention_offset_profile_finds_known_patterns():
    """Weights that look exactly at the anchor give 1 at offset 0; one step back gives 1 at offset -1."""
    task = DigitTask("reverse", 3, 6)
    src, tgt = task.sample(20, torch.Generator().manual_seed(0))
    B, T_s = src.shape
    T_t = tgt.shape[1] - 1
    n = (src != PAD).sum(1)

    class Fake:
        def attention_weights(self, s, t_in):
            eye = torch.eye(T_s)[None, None].expand(B, 2, T_s, T_s)  # encoder: self
            prev = torch.zeros(B, 2, T_t, T_t)  # decoder self: one step back (or self at t = 0)
            idx = (torch.arange(T_t) - 1).clamp(min=0)
            prev[:, :, torch.arange(T_t), idx] = 1.0
            cross = torch.zeros(B, 2, T_t, T_s)  # cross: the mirror position n - 1 - t
            for b in range(B):
                for t in range(T_t):
                    cross[b, :, t, max(int(n[b]) - 1 - t, 0)] = 1.0
            return {"encoder": [eye], "decoder_self": [prev], "cross": [cross]}

    prof = attention_offset_profile(Fake(), src, tgt, max_offset=2)
    assert {k: tuple(v.shape) for k, v in prof.items()} == {k: (1, 2, 5) for k in prof}
    torch.testing.assert_close(prof["encoder"][0, :, 2], torch.ones(2))
    torch.testing.assert_close(prof["cross"][0, :, 2], torch.ones(2))
    assert prof["cross"][0, :, [0, 1, 3, 4]].abs().max() == 0
    assert prof["decoder_self"][0, 0, 1] > 0.8  # offset -1 (t = 0 has no earlier key)
    assert torch.isnan(prof["decoder_self"][0, :, 3:]).all(), "future keys are invisible: NaN"


def test_token_probabilities_are_the_teacher_forced_softmax_on_non_pad_targets():
    from companion.seq2seq import PAD, VOCAB_SIZE, DigitTask, LSTMSeq2Seq, token_probabilities

    torch.manual_seed(0)
    model = LSTMSeq2Seq(VOCAB_SIZE, d_embed=8, d_hidden=8)
    src, tgt = DigitTask("reverse", 2, 5).sample(6, torch.Generator().manual_seed(0))
    model.train()
    probs, targets = token_probabilities(model, src, tgt)
    assert model.training  # the mode is restored
    n_real = int((tgt[:, 1:] != PAD).sum())
    assert probs.shape == (n_real, VOCAB_SIZE) and targets.shape == (n_real,)
    assert (targets != PAD).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(n_real))
    model.eval()
    with torch.no_grad():
        logits = model(src, tgt[:, :-1])
    first = logits[0, 0].softmax(-1)  # the first target of the first example is never PAD
    torch.testing.assert_close(probs[0], first)
