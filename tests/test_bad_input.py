"""Careless and hostile inputs get a clear error that names the problem and the expected value (issue #12).

Each test feeds one bad input and checks the error's type and that its message says what is
wrong and what was expected; inputs that used to pass silently (with wrong numbers) come first.
"""

from __future__ import annotations

import math

import pytest
import torch

from companion import data, metrics, train
from companion.attention import MultiHeadAttention, fused_attention, scaled_dot_product_attention
from companion.data import CharTokenizer
from companion.env import env_flag
from companion.gpt import GPT, GPTConfig
from companion.layers import mlp
from companion.plotting import show_grid, tile_images
from companion.seq2seq import LSTMSeq2Seq
from companion.transformer import Transformer

# ------------------------------------------------------------------ environment switches


@pytest.mark.parametrize("value, expected", [("1", True), ("yes", True), ("ON", True), ("True", True),
                                             ("", False), ("0", False), ("no", False), ("off", False),
                                             ("FALSE", False)])
def test_env_switches_accept_the_usual_spellings(monkeypatch, value, expected):
    monkeypatch.setenv("COMPANION_TEST_FLAG", value)
    assert env_flag("COMPANION_TEST_FLAG") is expected


def test_offline_no_and_fallback_no_switch_the_behaviour_off(monkeypatch):
    # they used to switch it ON: any non-empty value but "0"/"false" counted as true
    monkeypatch.setenv("COMPANION_OFFLINE", "no")
    monkeypatch.setenv("COMPANION_MNIST_FALLBACK", "no")
    assert data._offline() is False and data._fallback_enabled() is False


@pytest.mark.parametrize("name", ["COMPANION_OFFLINE", "COMPANION_MNIST_FALLBACK"])
def test_an_unknown_switch_value_is_an_error_naming_variable_and_spellings(monkeypatch, name):
    monkeypatch.setenv(name, "maybe")
    check = data._offline if name == "COMPANION_OFFLINE" else data._fallback_enabled
    with pytest.raises(ValueError, match=rf"{name}='maybe' is not a switch: use one of 1, true, yes, on"):
        check()


def test_retrain_switch_is_checked_too(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path))
    monkeypatch.setenv("COMPANION_RETRAIN", "sometimes")
    with pytest.raises(ValueError, match="COMPANION_RETRAIN='sometimes'.*off"):
        train.train_or_load("m", torch.nn.Linear(2, 2), lambda m: train.History(), {"a": 1})


# ------------------------------------------------------------------ silent wrong numbers


@pytest.mark.parametrize("fn", [metrics.class_coverage, metrics.class_kl_to_uniform])
def test_class_metrics_reject_negative_counts(fn):
    with pytest.raises(ValueError, match=r"counts >= 0, got minimum -3"):
        fn(torch.tensor([5, -3, 10]))


@pytest.mark.parametrize("fn", [metrics.class_coverage, metrics.class_kl_to_uniform])
def test_class_metrics_reject_an_all_zero_histogram(fn):
    with pytest.raises(ValueError, match="at least one sample"):
        fn(torch.zeros(10, dtype=torch.long))


def test_frechet_distance_rejects_a_covariance_that_is_not_positive_semidefinite():
    mu = torch.zeros(2)
    not_psd = torch.tensor([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1; used to give 0.0
    with pytest.raises(ValueError, match=r"sigma_2 is not positive semi-definite \(smallest eigenvalue -1"):
        metrics.frechet_distance(mu, torch.eye(2), mu, not_psd)


def test_frechet_distance_rejects_an_asymmetric_matrix():
    with pytest.raises(ValueError, match="sigma_1 is not symmetric"):
        metrics.frechet_distance(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]), torch.zeros(2), torch.eye(2))


@pytest.mark.parametrize("attend", [lambda q, k, v: scaled_dot_product_attention(q, k, v),
                                    lambda q, k, v: fused_attention(q, k, v)])
def test_attention_with_no_keys_raises_on_both_paths(attend):
    q, k, v = torch.randn(1, 3, 4), torch.randn(1, 0, 4), torch.randn(1, 0, 5)
    with pytest.raises(ValueError, match="T_k = 0 positions: attention needs at least one key"):
        attend(q, k, v)


def test_transformer_greedy_decoding_refuses_nan_logits():
    model = Transformer(13, 13, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32)
    with torch.no_grad():
        model.generator.weight.fill_(float("nan"))  # a diverged output layer; argmax used to pick id 0
    with pytest.raises(FloatingPointError, match="non-finite logits at decoding step 1"):
        model.greedy_decode(torch.randint(3, 13, (2, 5)), max_len=4, bos_id=1, eos_id=2)


def test_lstm_greedy_decoding_refuses_nan_logits():
    model = LSTMSeq2Seq()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite logits at decoding step 1"):
        model.greedy_decode(torch.randint(3, 13, (2, 5)), max_len=4, bos_id=1, eos_id=2)
    assert model.training  # the mode is restored even when decoding fails


# ------------------------------------------------------------------ poor messages


@pytest.mark.parametrize("dtype", [torch.int64, torch.float64])
def test_multi_head_attention_names_the_dtype_it_needs(dtype):
    mha = MultiHeadAttention(8, 2)
    x = torch.ones(1, 3, 8, dtype=dtype)
    with pytest.raises(TypeError, match=rf"query has dtype {dtype} but the layer's weights are torch.float32"):
        mha(x, x, x)


def test_multi_head_attention_rejects_a_list():
    with pytest.raises(TypeError, match=r"query must be a torch.Tensor of shape \(B, T, 8\), got list"):
        MultiHeadAttention(8, 2)([[0.0] * 8], None, None)


def test_attention_inputs_must_share_a_float_dtype():
    q = torch.randn(2, 3, 4)
    with pytest.raises(TypeError, match="one floating-point dtype, got torch.float32, torch.float64"):
        scaled_dot_product_attention(q, q.double(), q)


def test_gpt_prompt_with_batch_size_zero():
    model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match=r"holds no sequence \(shape \(0, 3\)\): the batch size B must be >= 1"):
        model.generate(torch.zeros(0, 3, dtype=torch.long), 2)


def test_tokenizer_decode_refuses_float_ids():
    tok = CharTokenizer("hello")
    with pytest.raises(TypeError, match="token ids must be integers, got a tensor of dtype torch.float32"):
        tok.decode(torch.tensor([0.0, 1.0]))


def test_tokenizer_decode_refuses_a_batch():
    tok = CharTokenizer("hello")
    with pytest.raises(ValueError, match=r"one sequence of ids, shape \(T,\), got shape \(2, 2\)"):
        tok.decode(torch.zeros(2, 2, dtype=torch.long))


def test_tokenizer_decode_refuses_a_list_of_floats():
    with pytest.raises(TypeError, match=r"token ids must be ints, got \[0.5\]"):
        CharTokenizer("hello").decode([0.5])


def test_warmup_cosine_lr_needs_a_positive_peak():
    with pytest.raises(ValueError, match="need peak > 0 and final >= 0, got peak=0"):
        train.warmup_cosine_lr(0, 0.0, peak=0.0)


def test_mlp_names_the_known_activations():
    with pytest.raises(ValueError, match=r"unknown activation 'swish'; expected one of \['elu', 'gelu'"):
        mlp([2, 3], "swish")


def test_mlp_needs_two_positive_sizes():
    with pytest.raises(ValueError, match=r"at least two widths, each >= 1, got \[4\]"):
        mlp([4])


def test_image_grid_needs_one_label_per_row():
    with pytest.raises(ValueError, match="row_labels needs 2 labels, got 3"):
        show_grid(torch.rand(4, 1, 28, 28), 2, row_labels=["a", "b", "c"])


def test_image_grid_needs_grey_images():
    with pytest.raises(ValueError, match=r"shape \(N, 1, H, W\) with N >= 1 \(grey images\), got \(4, 3, 28, 28\)"):
        tile_images(torch.rand(4, 3, 28, 28), 2)


# ------------------------------------------------------------------ corrupt weight cache


def _train_into(value: float):
    def run(model):
        with torch.no_grad():
            model.weight.fill_(value)
        history = train.History()
        history.metrics["loss"].append(value)
        return history

    return run


@pytest.mark.parametrize("corruption", ["truncated", "empty", "foreign", "other shape"])
def test_a_corrupt_cache_entry_is_reported_and_retrained(monkeypatch, tmp_path, corruption):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path))
    monkeypatch.delenv("COMPANION_RETRAIN", raising=False)
    train.train_or_load("m", torch.nn.Linear(2, 2), _train_into(1.0), {"k": 1})
    (path,) = tmp_path.glob("m-*.pt")
    if corruption == "truncated":
        path.write_bytes(path.read_bytes()[:50])
    elif corruption == "empty":
        path.write_bytes(b"")
    elif corruption == "foreign":
        torch.save({"something": "else"}, path)
    else:
        torch.save({"state_dict": torch.nn.Linear(3, 3).state_dict(), "metrics": {}, "seconds": 0.0}, path)
    model = torch.nn.Linear(2, 2)
    with pytest.warns(RuntimeWarning, match=r"cached weights for 'm' in .*m-.*\.pt cannot be used .*training again"):
        history = train.train_or_load("m", model, _train_into(2.0), {"k": 1})
    assert history["loss"] == [2.0] and bool((model.weight == 2.0).all())
    again = torch.nn.Linear(2, 2)  # the bad file was replaced by the new weights
    train.train_or_load("m", again, _train_into(math.nan), {"k": 1})
    assert bool((again.weight == 2.0).all())


# ------------------------------------------------------------------ no test touches the network


def test_the_suite_runs_with_outside_network_access_blocked(request):
    """pytest-socket (pyproject's addopts) lets sockets connect to this machine only.

    Checked without opening any connection: the plugin has replaced ``socket.connect`` and the
    allowed hosts are the loopback ones.
    """
    import socket

    allowed = request.config.getoption("allow_hosts")
    assert set(str(allowed).split(",")) == {"127.0.0.1", "localhost", "::1"}, allowed
    assert socket.socket.connect.__module__ == "pytest_socket"


# ------------------------------------------------------------------ more silent wrong numbers (#12 items 8-9)


def test_vqvae_decode_codes_needs_the_encoders_grid():
    from companion.vqvae import VQVAE

    model = VQVAE(codebook_size=8, code_dim=4, channels=8)
    with pytest.raises(ValueError, match=r"shape \(B, 7, 7\).*got \(2, 5, 5\)"):  # used to make 20 x 20 images
        model.decode_codes(torch.zeros(2, 5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"code numbers must lie in \[0, 8\), got 9 to 9"):
        model.decode_codes(torch.full((1, 7, 7), 9))
    assert model.decode_codes(torch.zeros(1, 7, 7, dtype=torch.long)).shape == (1, 1, 28, 28)


def test_fit_gaussian_to_density_refuses_a_negative_density():
    from companion.divergences import fit_gaussian_to_density

    x = torch.linspace(-3, 3, 101)
    p = torch.exp(-x**2) - 0.2  # negative in the tails: used to be silently renormalised
    with pytest.raises(ValueError, match=r"finite, >= 0 and not all zero; got minimum -0.2"):
        fit_gaussian_to_density(x, p)


def test_vae_loss_of_an_empty_batch():
    from companion.vae import VAE

    model = VAE((1, 4, 4), hidden=[8], z_dim=2)
    with pytest.raises(ValueError, match=r"the batch is empty \(B = 0\)"):  # used to return NaN
        model.loss(torch.zeros(0, 1, 4, 4))


def test_kl_divergence_names_the_type_it_needs():
    from companion.divergences import kl_divergence

    with pytest.raises(TypeError, match=r"p must be a torch.Tensor of probabilities, got list .*torch.tensor\(p"):
        kl_divergence([0.5, 0.5], torch.tensor([0.5, 0.5]))
