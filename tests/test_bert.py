"""companion.bert: the masking rule, bidirectional attention, the masked-LM loss."""

import pytest
import torch
import torch.nn.functional as F

from companion.bert import BERT, BERTConfig, fill_in_comparison, mask_tokens
from companion.gpt import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

V = 9  # 8 real tokens + [MASK] = 8


def tiny_bert(seed=0) -> BERT:
    torch.manual_seed(seed)
    return BERT(BERTConfig(vocab_size=V, block_size=10, n_layer=2, n_head=2, n_embd=16)).eval()


def test_mask_tokens_follows_the_80_10_10_rule():
    idx = torch.randint(V - 1, (400, 100), generator=torch.Generator().manual_seed(0))
    inputs, labels = mask_tokens(idx, mask_id=V - 1, n_real=V - 1, mask_prob=0.15,
                                 generator=torch.Generator().manual_seed(1))
    chosen = labels != -100
    assert torch.equal(labels[chosen], idx[chosen])
    assert torch.equal(inputs[~chosen], idx[~chosen])  # unchosen positions are untouched
    n = chosen.sum().item()
    assert abs(n / idx.numel() - 0.15) < 0.005
    masked = (inputs[chosen] == V - 1).float().mean().item()
    kept = (inputs[chosen] == idx[chosen]).float().mean().item()  # 10% kept + random hits (1/8 of 10%)
    assert abs(masked - 0.8) < 0.015 and abs(kept - (0.1 + 0.1 / (V - 1))) < 0.015
    assert inputs.max() <= V - 1 and inputs.min() >= 0


def test_mask_tokens_chooses_at_least_one_position_per_row():
    idx = torch.zeros(50, 4, dtype=torch.long)
    _, labels = mask_tokens(idx, V - 1, V - 1, mask_prob=0.01, generator=torch.Generator().manual_seed(0))
    assert ((labels != -100).sum(1) >= 1).all()


def test_bert_sees_both_sides_where_gpt_sees_only_the_left():
    bert = tiny_bert()
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=V - 1, block_size=10, n_layer=2, n_head=2, n_embd=16)).eval()
    x = torch.randint(V - 1, (1, 10), generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[0, 7] = (y[0, 7] + 1) % (V - 1)
    with torch.no_grad():
        bert_change = (bert(x)[0][0, :7, :-1] - bert(y)[0][0, :7, :-1]).abs().max()
        gpt_change = (gpt(x)[0][0, :7] - gpt(y)[0][0, :7]).abs().max()
    assert bert_change > 1e-4 and gpt_change < 1e-6


def test_masked_lm_loss_counts_only_the_chosen_positions():
    bert = tiny_bert()
    x = torch.randint(V - 1, (3, 10))
    inputs, labels = mask_tokens(x, V - 1, V - 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, loss = bert(inputs, labels)
    chosen = labels != -100
    torch.testing.assert_close(loss, F.cross_entropy(logits[chosen], labels[chosen]))


def test_mask_token_is_never_predicted():
    with torch.no_grad():
        probs = tiny_bert()(torch.randint(V, (2, 10)))[0].softmax(-1)
    assert (probs[..., V - 1] == 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 10))


def test_fill_in_comparison_scores_the_same_hidden_positions():
    bert = tiny_bert()
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=V - 1, block_size=10, n_layer=1, n_head=1, n_embd=8))
    data = torch.randint(V - 1, (500,))
    out = fill_in_comparison(bert, gpt, data, n_windows=32, generator=torch.Generator().manual_seed(0))
    assert out["n_hidden"] > 0
    # untrained models are near uniform over the 8 real tokens
    for key in ("bert_nll", "gpt_nll"):
        assert abs(out[key] - torch.log(torch.tensor(8.0)).item()) < 0.1
    assert 0 <= out["bert_acc"] <= 1 and 0 <= out["gpt_acc"] <= 1


def test_bert_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 9\)"):
        tiny_bert()(torch.tensor([[0, 9]]))
    with pytest.raises(ValueError, match="exceeds block_size"):
        tiny_bert()(torch.zeros(1, 11, dtype=torch.long))
