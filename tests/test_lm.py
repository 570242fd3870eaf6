"""companion.lm: bigram baselines, perplexity and bits/char, batches, the validation evaluator."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.gpt import GPT, GPTConfig
from companion.lm import (
    BigramCounts,
    NeuralBigram,
    bits_per_char,
    check_bigram_probability,
    check_perplexity,
    evaluate_nll,
    get_batch,
    perplexity,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def markov_tokens(n=3000, V=5, seed=0) -> torch.Tensor:
    """Tokens from a random first-order Markov chain, so a bigram model is the right model."""
    g = torch.Generator().manual_seed(seed)
    P = torch.rand(V, V, generator=g).pow(3)
    P = P / P.sum(1, keepdim=True)
    x = [0]
    for _ in range(n - 1):
        x.append(int(torch.multinomial(P[x[-1]], 1, generator=g)))
    return torch.tensor(x)


def test_perplexity_and_bits_per_char_of_a_uniform_model():
    nll = math.log(65)  # a uniform model over 65 characters
    assert perplexity(nll) == pytest.approx(65)
    assert bits_per_char(nll) == pytest.approx(math.log2(65))
    assert perplexity(torch.tensor(nll)).item() == pytest.approx(65, rel=1e-6)


def test_bigram_counts_are_the_conditional_frequencies():
    text = torch.tensor([0, 1, 0, 2, 0, 1, 1])  # pairs: 01 10 02 20 01 11
    model = BigramCounts(3, alpha=0.0).fit(text)
    probs = model.log_probs.exp()
    torch.testing.assert_close(probs[0], torch.tensor([0.0, 2 / 3, 1 / 3]))
    torch.testing.assert_close(probs[1], torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(probs[2], torch.tensor([1.0, 0.0, 0.0]))


@given(alpha=st.floats(0.01, 5.0), seed=st.integers(0, 100))
@settings(max_examples=20, deadline=None)
def test_smoothed_bigram_rows_are_distributions(alpha, seed):
    data = torch.randint(7, (200,), generator=torch.Generator().manual_seed(seed))
    probs = BigramCounts(7, alpha).fit(data).log_probs.exp()
    torch.testing.assert_close(probs.sum(1), torch.ones(7))
    assert (probs > 0).all()  # smoothing gives unseen pairs a probability


def test_bigram_training_nll_is_the_empirical_conditional_entropy():
    data = markov_tokens()
    model = BigramCounts(5, alpha=0.0).fit(data)
    c = model.counts
    H = -(c * (c / c.sum(1, keepdim=True)).log()).nan_to_num().sum() / c.sum()
    _, loss = model(data[None, :-1], data[None, 1:])
    assert loss.item() == pytest.approx(H.item(), rel=1e-5)


@pytest.mark.slow
def test_neural_bigram_converges_to_the_count_model():
    data = markov_tokens()
    counts = BigramCounts(5, alpha=0.0).fit(data)
    x, y = data[None, :-1], data[None, 1:]
    target = counts(x, y)[1].item()
    model = NeuralBigram(5)
    assert model(x, y)[1].item() == pytest.approx(math.log(5), rel=1e-6)  # zero weights: uniform
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(300):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() == pytest.approx(target, abs=2e-3)
    torch.testing.assert_close(model.W.weight.log_softmax(-1).exp(), counts.log_probs.exp(), atol=0.02, rtol=0)


def test_get_batch_targets_are_inputs_shifted_by_one():
    data = torch.arange(100)
    x, y = get_batch(data, 8, 10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 10)
    assert torch.equal(y, x + 1)  # data[i] = i
    assert x.min() >= 0 and y.max() <= 99
    x2, _ = get_batch(data, 8, 10, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)


def test_get_batch_rejects_too_short_data():
    with pytest.raises(ValueError, match="more than block_size"):
        get_batch(torch.arange(5), 2, 5)
    with pytest.raises(ValueError, match="1-D int64"):
        get_batch(torch.rand(100), 2, 5)


def test_evaluator_on_a_bigram_is_the_mean_nll_of_every_transition():
    data = markov_tokens(1000)
    model = BigramCounts(5).fit(data[:800])
    val = data[800:]
    expected = -model.log_probs[val[:-1], val[1:]].mean().item()
    for block_size in (1, 7, 64, 500):
        assert evaluate_nll(model, val, block_size) == pytest.approx(expected, rel=1e-6)


def test_evaluator_predicts_every_token_once_within_its_window():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=6, block_size=5, n_layer=1, n_head=1, n_embd=8)).eval()
    data = torch.randint(6, (13,))  # 12 predictions: windows of 5, 5 and 2
    nll = []
    with torch.no_grad():
        for s in range(0, 12, 5):
            x, y = data[s : min(s + 5, 12)], data[s + 1 : min(s + 6, 13)]
            nll.append(F.cross_entropy(model(x[None])[0][0], y, reduction="sum"))
    expected = (sum(nll) / 12).item()
    for batch_size in (1, 2, 64):
        assert evaluate_nll(model, data, 5, batch_size) == pytest.approx(expected, rel=1e-5)


def test_evaluator_restores_training_mode():
    model = NeuralBigram(4).train()
    evaluate_nll(model, torch.randint(4, (50,)), 8)
    assert model.training


def test_check_bigram_probability_accepts_right_and_rejects_wrong_answers(capsys):
    text = "abracadabra"
    # 'a' is followed by b, c, d, b (the last 'a' ends the text): p(b | a) = 2/4
    assert check_bigram_probability(0.5, text, "a", "b")
    assert not check_bigram_probability(2 / 5, text, "a", "b")
    # add-one smoothing over the 5 characters: (2 + 1) / (4 + 5)
    assert check_bigram_probability(3 / 9, text, "a", "b", alpha=1.0)
    assert "Correct" in capsys.readouterr().out


def test_check_perplexity():
    assert check_perplexity(1.5, math.exp(1.5), 1.5 / math.log(2))
    assert not check_perplexity(1.5, 2 ** 1.5, 1.5 / math.log(2))
