"""Exercise checkers (``check_...``): each accepts a right answer and rejects a wrong one, with its verdict printed.

The checkers of issue #18 item 7; older checkers are tested beside their modules.
"""

from __future__ import annotations

import math

import pytest
import torch

from companion import metrics
from companion.attention import check_attention_weight_bytes, check_score_variance
from companion.bert import check_pseudo_log_likelihood, pseudo_log_likelihood
from companion.bleu import check_bleu_gaming
from companion.classifiers import check_generative
from companion.conv_seq2seq import check_layers_needed
from companion.diffusion import check_eps_from_score, check_posterior_mean, check_q_sample
from companion.distributed import check_scale_out_steps
from companion.divergences import check_forward_kl_fit
from companion.gradient_estimators import check_gaussian_score
from companion.layers import check_transe_scores, transe_score
from companion.linear_gaussian import check_gaussian_decoder_nll, check_meanfield_variances
from companion.positional import check_pair_distance, check_pe_dot, pe_frequencies
from companion.probes import check_probe
from companion.seq2seq import LSTMSeq2Seq, check_bottleneck, check_loglog_slope
from companion.transformer import check_label_smoothing_minimum
from companion.vqvae import VQVAE, check_vq_kl


def verdicts(capsys) -> list[str]:
    """The first word of every verdict printed so far."""
    return [line.split(":")[0] for line in capsys.readouterr().out.splitlines() if line]


def test_check_score_variance(capsys):
    assert check_score_variance(lambda d_k, s_q, s_k: d_k * s_q**2 * s_k**2)
    assert not check_score_variance(lambda d_k, s_q, s_k: d_k * s_q * s_k)  # standard deviations, not variances
    assert not check_score_variance(lambda d_k, s_q, s_k: d_k)  # the unit-variance answer
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]


def test_check_attention_weight_bytes(capsys):
    assert check_attention_weight_bytes(lambda T: 4 * T * T)
    assert not check_attention_weight_bytes(lambda T: T * T)  # counts weights, not bytes
    assert not check_attention_weight_bytes(lambda T: 4 * T)
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]


def test_check_pe_dot(capsys):
    assert check_pe_dot(lambda k, d_model: torch.cos(pe_frequencies(d_model).double() * k).sum().item())
    assert not check_pe_dot(lambda k, d_model: d_model / 2)  # right for k = 0 only
    assert not check_pe_dot(lambda k, d_model: torch.sin(pe_frequencies(d_model).double() * k).sum().item())
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]


def test_check_label_smoothing_minimum(capsys):
    K, eps = 13, 0.1
    q = torch.full((K,), eps / K, dtype=torch.float64)
    q[0] += 1 - eps
    entropy = -(q * q.log()).sum().item()
    assert check_label_smoothing_minimum(entropy, q)
    assert not check_label_smoothing_minimum(0.0, torch.eye(K)[0])  # the unsmoothed minimum
    assert not check_label_smoothing_minimum(entropy, torch.full((K,), 1 / K))  # right value, wrong p
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]
    with pytest.raises(ValueError, match="probability vector"):
        check_label_smoothing_minimum(entropy, q[:5])


def test_check_bottleneck(capsys):
    model = LSTMSeq2Seq(d_hidden=64, n_layers=1)
    assert check_bottleneck(2 * 64, 12 * math.log2(10), model, 12)
    assert not check_bottleneck(64, 12 * math.log2(10), model, 12)  # forgets the cell state c
    assert not check_bottleneck(2 * 64, 12 * 4, model, 12)  # 4 bits per digit
    assert check_bottleneck(2 * 2 * 32, 3 * math.log2(10), LSTMSeq2Seq(d_hidden=32, n_layers=2), 3)
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet", "Correct"]
    with pytest.raises(TypeError, match="LSTMSeq2Seq"):
        check_bottleneck(128, 40.0, torch.nn.LSTM(4, 4), 12)


def test_check_scale_out_steps(capsys):
    assert check_scale_out_steps(469, 118, 512, 4e-3)
    assert not check_scale_out_steps(469, 117, 512, 4e-3)  # floor(469 / 4)
    assert not check_scale_out_steps(469, 118, 128, 1e-3)  # per-rank batch and unscaled rate
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]


def test_check_meanfield_variances(capsys):
    def precision(W, sigma):
        return torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W / sigma**2

    assert check_meanfield_variances(lambda W, b, sigma: 1 / torch.diagonal(precision(W, sigma)))
    assert not check_meanfield_variances(lambda W, b, sigma: torch.diagonal(torch.linalg.inv(precision(W, sigma))))
    assert not check_meanfield_variances(lambda W, b, sigma: torch.ones(2, dtype=torch.float64))  # wrong shape
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]


def test_check_gaussian_decoder_nll(capsys):
    def nll(x, x_hat, s):
        return ((x - x_hat) ** 2).sum(-1) / (2 * s**2) + x.shape[-1] / 2 * math.log(2 * math.pi * s**2)

    assert check_gaussian_decoder_nll(nll)
    assert not check_gaussian_decoder_nll(lambda x, x_hat, s: ((x - x_hat) ** 2).sum(-1) / (2 * s**2))  # no constant
    assert not check_gaussian_decoder_nll(lambda x, x_hat, s: nll(x, x_hat, s).mean())  # one number for the batch
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]


def test_check_vq_kl(capsys):
    model = VQVAE(codebook_size=32, code_dim=4, channels=8)
    assert check_vq_kl(49 * math.log(32), model)
    assert not check_vq_kl(math.log(32), model)  # one position, not the 7 x 7 grid
    assert not check_vq_kl(49 * math.log2(32), model)  # bits, not nats
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]
    with pytest.raises(TypeError, match="VQVAE"):
        check_vq_kl(1.0, torch.nn.Linear(2, 2))


def test_check_collapse_prediction(capsys):
    assert metrics.check_collapse_prediction(5.0, math.log(2))
    assert metrics.check_collapse_prediction(10.0, 0.0, n_kept=10)
    assert not metrics.check_collapse_prediction(10.0, math.log(2))  # IS cannot exceed the number of classes made
    assert not metrics.check_collapse_prediction(5.0, math.log(5))
    assert verdicts(capsys) == ["Correct", "Correct", "Not yet", "Not yet"]


def test_pseudo_log_likelihood_and_its_checker(capsys):
    assert check_pseudo_log_likelihood(pseudo_log_likelihood)

    def unmasked(bert, x):  # scores every position with the true token visible
        T = x.shape[0]
        return bert(x[None])[0].log_softmax(-1)[0, torch.arange(T), x].sum()

    assert not check_pseudo_log_likelihood(unmasked)
    assert not check_pseudo_log_likelihood(lambda bert, x: 1 / 0)  # a raising answer is a verdict, not a crash
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]


def test_check_forward_kl_fit(capsys):
    def moments(x, p):
        w = p / p.sum()
        mean = (w * x).sum()
        return mean, (w * (x - mean) ** 2).sum().sqrt()

    assert check_forward_kl_fit(moments)
    assert not check_forward_kl_fit(lambda x, p: (moments(x, p)[0], moments(x, p)[1] ** 2))  # the variance
    assert not check_forward_kl_fit(lambda x, p: (x[p.argmax()], 1.0))  # the mode: the reverse-KL habit
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]


def test_check_generative(capsys):
    right = {"AlexNet": False, "word2vec": False, "VAE": True, "GPT-2": True, "BERT": False}
    assert check_generative(right)
    assert not check_generative({**right, "BERT": True})
    out = capsys.readouterr().out
    assert out.startswith("Correct:") and "Not yet: BERT is not generative" in out
    with pytest.raises(ValueError, match="keys"):
        check_generative({"VAE": True})


def test_transe_score_and_its_checker(capsys):
    h, r, t = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 2.0]), torch.tensor([1.0, 2.0])
    assert transe_score(h, r, t).item() == pytest.approx(-2.0)
    assert check_transe_scores({"France": -2.0, "Germany": 0.0, "Spain": -2.0})
    assert not check_transe_scores({"France": 2.0, "Germany": 0.0, "Spain": 2.0})  # distances, not scores
    assert verdicts(capsys) == ["Correct", "Not yet"]
    with pytest.raises(ValueError, match="keys"):
        check_transe_scores({"France": -2.0})


def test_check_gaussian_score(capsys):
    def score(z, mu, logvar):
        var = logvar.exp()
        return (z - mu) / var, 0.5 * ((z - mu) ** 2 / var - 1)

    assert check_gaussian_score(score)
    assert not check_gaussian_score(lambda z, mu, logvar: (score(z, mu, logvar)[0], (z - mu) ** 2 / logvar.exp() - 1))
    assert not check_gaussian_score(lambda z, mu, logvar: score(z, mu, logvar)[0])  # one tensor, not a pair
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]


def test_check_loglog_slope(capsys):
    def slope(lengths, seconds):
        x = torch.tensor(lengths, dtype=torch.float64).log()
        y = torch.tensor(seconds, dtype=torch.float64).log()
        return (((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()).item()

    assert check_loglog_slope(slope)
    assert not check_loglog_slope(lambda lengths, s: math.log(s[-1] / s[0]) / math.log(lengths[-1] / lengths[0]))
    assert verdicts(capsys) == ["Correct", "Not yet"]


def test_check_layers_needed(capsys):
    def layers_needed(max_len, k):
        return math.ceil(math.log2((2 * max_len + 1) / (k - 1) + 1))

    assert check_layers_needed(layers_needed)
    assert not check_layers_needed(lambda max_len, k: math.ceil(math.log2(2 * max_len)))  # ignores k
    assert not check_layers_needed(lambda max_len, k: 2 * max_len)  # an undilated count
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]


def test_pseudo_log_likelihood_equals_one_masked_forward_pass_per_position():
    from companion.bert import BERT, BERTConfig

    torch.manual_seed(0)
    bert = BERT(BERTConfig(vocab_size=9, block_size=6, n_layer=1, n_head=2, n_embd=8)).eval()
    x = torch.tensor([0, 3, 7, 1, 1, 5])
    total = 0.0
    for t in range(len(x)):
        masked = x.clone()
        masked[t] = bert.config.mask_id
        with torch.no_grad():
            total += bert(masked[None])[0][0, t].log_softmax(-1)[x[t]].item()
    assert pseudo_log_likelihood(bert, x) == pytest.approx(total, abs=1e-5)
    with pytest.raises(ValueError, match=r"shape \(T,\)"):
        pseudo_log_likelihood(bert, x[None])


def test_check_pair_distance(capsys):
    def chord(k, i, d_model):
        return 2 * abs(math.sin(pe_frequencies(d_model)[i].item() * k / 2))

    assert check_pair_distance(chord)
    assert not check_pair_distance(lambda k, i, d_model: abs(pe_frequencies(d_model)[i].item() * k))  # the arc
    assert not check_pair_distance(lambda k, i, d_model: 2 * abs(math.sin(k / 2)))  # pair 0's frequency for all
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]


def test_check_bleu_gaming(capsys):
    assert check_bleu_gaming("the cat sat on the dog", "a kitten rested upon one rug")
    assert not check_bleu_gaming("the cat sat on the mat", "a kitten rested upon one rug")  # the reference itself
    assert not check_bleu_gaming("a dog sat on a mat", "a kitten rested upon one rug")  # too little overlap
    assert not check_bleu_gaming("the cat sat on the dog", "the cat was sitting on the rug")  # seven words
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet", "Not yet"]
    with pytest.raises(TypeError, match="strings"):
        check_bleu_gaming(["the cat"], "a kitten")


def test_check_q_sample(capsys):
    def right(x0, t, noise, alpha_bar):
        ab = alpha_bar[t].reshape(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def variances(x0, t, noise, alpha_bar):  # scales by the variances, not the standard deviations
        ab = alpha_bar[t].reshape(-1, 1, 1, 1)
        return ab * x0 + (1 - ab) * noise

    assert check_q_sample(right)
    assert not check_q_sample(variances)
    assert not check_q_sample(lambda x0, t, noise, ab: ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * noise)  # no reshape
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]


def test_check_posterior_mean(capsys):
    from companion.diffusion import alpha_bar_from_betas

    def right(x0, x_t, t, betas):
        ab = alpha_bar_from_betas(betas)
        ab_t, ab_prev, beta = ab[t][:, None], ab[t - 1][:, None], betas[t][:, None]
        return (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x_t) / (1 - ab_t)

    assert check_posterior_mean(right)
    assert not check_posterior_mean(lambda x0, x_t, t, betas: right(x_t, x0, t, betas))  # swapped
    assert not check_posterior_mean(lambda x0, x_t, t, betas: x0)  # the data alone
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]


def test_check_eps_from_score(capsys):
    assert check_eps_from_score(lambda score, ab: -torch.sqrt(1 - ab) * score)
    assert not check_eps_from_score(lambda score, ab: torch.sqrt(1 - ab) * score)  # wrong sign
    assert not check_eps_from_score(lambda score, ab: -(1 - ab) * score)  # the variance, not the scale
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]


def test_check_probe(capsys):
    def probe(tx, ty, vx, vy, standardise=True, report_train=False):
        mu, sd = (tx.mean(0), tx.std(0)) if standardise else (0.0, 1.0)
        h, hv = (tx - mu) / sd, (vx - mu) / sd
        W = torch.zeros(h.shape[1], 3, requires_grad=True)
        b = torch.zeros(3, requires_grad=True)
        opt = torch.optim.Adam([W, b], lr=0.05)
        for _ in range(300):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(h @ W + b, ty).add(5e-4 * (W**2).sum()).backward()
            opt.step()
        x, y = (h, ty) if report_train else (hv, vy)
        return ((x @ W + b).argmax(1) == y).float().mean().item()

    assert check_probe(probe)
    assert not check_probe(lambda *a: probe(*a, standardise=False))
    assert not check_probe(lambda *a: probe(*a, report_train=True))
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]


def test_check_bits_per_character(capsys):
    from companion.lm import check_bits_per_character

    assert check_bits_per_character(lambda n, t: float(n.sum()) / (math.log(2) * sum(map(len, t))))
    assert not check_bits_per_character(lambda n, t: float(n.mean()) / math.log(2))  # per token
    assert not check_bits_per_character(lambda n, t: float(n.sum()) / sum(map(len, t)))  # nats
    assert verdicts(capsys) == ["Correct", "Not yet", "Not yet"]
