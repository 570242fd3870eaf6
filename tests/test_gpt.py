"""companion.gpt: causality, the KV cache, sampling filters, reproducibility, input errors;
companion.recipes.gpt: the schedule and resuming."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.gpt import (
    GPT,
    GPTConfig,
    KVCache,
    next_token_probs,
    sample_next_token,
    top_k_filter,
    top_p_filter,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

V = 11


def tiny_gpt(seed=0, block_size=12, fast=True, **kw) -> GPT:
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=V, block_size=block_size, n_layer=2, n_head=2, n_embd=16, fast=fast, **kw))
    # weights far from init, so that the logits are not nearly uniform
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m.eval()


# ----------------------------------------------------------------------- causality


@given(seed=st.integers(0, 2**16), t=st.integers(0, 10))
@settings(max_examples=20, deadline=None)
def test_logits_at_t_do_not_change_when_later_tokens_change(seed, t):
    model = tiny_gpt()
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(V, (2, 12), generator=g)
    y = x.clone()
    y[:, t + 1 :] = torch.randint(V, (2, 12 - t - 1), generator=g)
    with torch.no_grad():
        lx, ly = model(x)[0], model(y)[0]
    torch.testing.assert_close(lx[:, : t + 1], ly[:, : t + 1], rtol=1e-5, atol=1e-5)


def test_logits_after_a_changed_token_do_change():
    # the converse: the model does use its context (else the causality test is vacuous)
    model = tiny_gpt()
    x = torch.randint(V, (1, 12), generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[0, 3] = (y[0, 3] + 1) % V
    with torch.no_grad():
        diff = (model(x)[0] - model(y)[0]).abs().amax(dim=-1)[0]
    assert diff[:3].max() < 1e-5 and diff[3:].min() > 1e-3


def test_fast_and_explicit_attention_paths_agree():
    fast, slow = tiny_gpt(fast=True), tiny_gpt(fast=False)
    x = torch.randint(V, (3, 12))
    with torch.no_grad():
        torch.testing.assert_close(fast(x)[0], slow(x)[0], rtol=1e-5, atol=1e-5)


def test_explicit_path_keeps_causal_attention_weights():
    model = tiny_gpt()
    with torch.no_grad():
        model(torch.randint(V, (1, 7)), need_weights=True)
    w = model.blocks[0].attn.last_weights  # (1, H, 7, 7)
    assert w.shape == (1, 2, 7, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, 7))
    assert torch.all(w.triu(diagonal=1) == 0)


def test_loss_is_the_mean_negative_log_likelihood_of_the_targets():
    model = tiny_gpt()
    x, y = torch.randint(V, (2, 9)), torch.randint(V, (2, 9))
    with torch.no_grad():
        logits, loss = model(x, y)
    nll = -logits.log_softmax(-1).gather(-1, y[..., None]).mean()
    torch.testing.assert_close(loss, nll)


# ------------------------------------------------------------------------ KV cache


def test_cached_forward_gives_the_same_logits_as_the_full_forward():
    model = tiny_gpt()
    x = torch.randint(V, (2, 10))
    with torch.no_grad():
        full = model(x)[0]
        cache = KVCache(2)
        parts = [model(x[:, :4], cache=cache)[0], model(x[:, 4:7], cache=cache)[0]]
        parts += [model(x[:, t : t + 1], cache=cache)[0] for t in range(7, 10)]
    assert len(cache) == 10
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("knobs", [dict(temperature=0.0), dict(temperature=1.0), dict(top_k=3),
                                   dict(top_p=0.8, temperature=1.5)])
@pytest.mark.parametrize("n_new", [5, 30])  # 30 runs past the context length (12)
def test_kv_cache_generation_equals_uncached_generation(knobs, n_new):
    model = tiny_gpt()
    prompt = torch.randint(V, (3, 4), generator=torch.Generator().manual_seed(1))
    for seed in range(3):
        def gen(use_cache, seed=seed):
            g = torch.Generator().manual_seed(seed)
            return model.generate(prompt, n_new, generator=g, use_cache=use_cache, **knobs)

        with_cache, without = gen(True), gen(False)
        assert torch.equal(with_cache, without)


def test_generation_past_the_context_length_crops_the_window():
    model = tiny_gpt(block_size=8)
    prompt = torch.randint(V, (1, 20))  # longer than the context already
    out = model.generate(prompt, 5, temperature=0)
    assert out.shape == (1, 25) and torch.equal(out[:, :20], prompt)
    # greedy: each new token is the argmax given only the last 8 tokens
    for t in range(20, 25):
        with torch.no_grad():
            logits = model(out[:, t - 8 : t])[0][:, -1]
        assert out[0, t] == logits.argmax(-1)[0]


def test_generate_restores_training_mode():
    model = tiny_gpt().train()
    model.generate(torch.zeros(1, 1, dtype=torch.long), 3)
    assert model.training


# ------------------------------------------------------------------- sampling knobs


def test_same_seed_gives_the_same_text_and_another_seed_another():
    model = tiny_gpt()
    prompt = torch.zeros(2, 1, dtype=torch.long)
    a = model.generate(prompt, 40, generator=torch.Generator().manual_seed(7))
    b = model.generate(prompt, 40, generator=torch.Generator().manual_seed(7))
    c = model.generate(prompt, 40, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_temperature_zero_is_greedy_decoding():
    logits = torch.tensor([[0.1, 2.0, -1.0, 2.0 - 1e-3]])
    assert sample_next_token(logits, temperature=0).item() == 1
    torch.testing.assert_close(next_token_probs(logits, temperature=0), torch.tensor([[0.0, 1.0, 0.0, 0.0]]))


def test_temperature_reshapes_the_softmax():
    logits = torch.randn(5, V, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(next_token_probs(logits, 2.0), (logits / 2).softmax(-1))
    # the entropy grows with the temperature: from the argmax's one-hot towards uniform
    temps = [0.25, 0.5, 1.0, 2.0, 4.0]
    H = torch.stack([-(q * q.clamp_min(1e-30).log()).sum(-1) for q in (next_token_probs(logits, t) for t in temps)])
    assert (H.diff(dim=0) > 0).all()
    gap = torch.tensor([[1.0, 0.0, 0.0, -1.0]])
    assert next_token_probs(gap, 0.01)[0, 0] > 1 - 1e-6
    torch.testing.assert_close(next_token_probs(logits, 1e4), torch.full((5, V), 1 / V), atol=1e-3, rtol=0)


logit_rows = st.lists(st.floats(-8, 8, allow_nan=False, width=32), min_size=2, max_size=12)


@given(row=logit_rows, k=st.integers(1, 14), seed=st.integers(0, 1000))
@settings(max_examples=80, deadline=None)
def test_top_k_never_samples_outside_the_k_most_probable(row, k, seed):
    logits = torch.tensor([row])
    kth = sorted(row, reverse=True)[min(k, len(row)) - 1]
    allowed = {i for i, z in enumerate(row) if z >= kth}
    ids = sample_next_token(logits.expand(200, -1), top_k=k, generator=torch.Generator().manual_seed(seed))
    assert set(ids.flatten().tolist()) <= allowed
    assert torch.isfinite(top_k_filter(logits, k)).sum() == len(allowed)


@given(row=logit_rows, p=st.floats(0.01, 1.0), temperature=st.floats(0.3, 3.0), seed=st.integers(0, 1000))
@settings(max_examples=80, deadline=None)
def test_top_p_never_samples_outside_the_nucleus(row, p, temperature, seed):
    logits = torch.tensor([row]) / temperature
    probs = logits.softmax(-1)[0].double().tolist()
    # token i is in the nucleus iff the tokens more probable than it hold less than p
    allowed = {i for i in range(len(row)) if sum(q for q in probs if q > probs[i] + 1e-9) < p + 1e-5}
    ids = sample_next_token(torch.tensor([row]).expand(200, -1), temperature=temperature, top_p=p,
                            generator=torch.Generator().manual_seed(seed))
    assert set(ids.flatten().tolist()) <= allowed
    kept = torch.isfinite(top_p_filter(logits, p))[0]
    assert any(kept[i] for i in range(len(row)) if probs[i] == max(probs))  # the most probable survives
    assert probs_mass(probs, kept) >= p - 1e-5


def probs_mass(probs, kept):
    return sum(q for q, k in zip(probs, kept.tolist(), strict=True) if k)


def test_top_p_one_and_large_top_k_change_nothing():
    logits = torch.randn(4, V)
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    assert torch.equal(top_k_filter(logits, V), logits)


def test_filters_and_probs_are_pure_functions():
    logits = torch.randn(3, V)
    before = logits.clone()
    next_token_probs(logits, 0.7, top_k=4, top_p=0.9)
    assert torch.equal(logits, before)


def test_filtered_distribution_renormalises_over_the_allowed_set():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    torch.testing.assert_close(next_token_probs(logits, top_k=2), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    torch.testing.assert_close(next_token_probs(logits, top_p=0.8), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    torch.testing.assert_close(next_token_probs(logits, top_p=0.81), torch.tensor([[0.5, 0.3, 0.15, 0.0]]) / 0.95)


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize("prompt, kwargs, message", [
    (torch.zeros(1, 0, dtype=torch.long), {}, "empty"),
    (torch.tensor([[1, 2, V]]), {}, r"\[0, 11\)"),
    (torch.tensor([[-1, 2]]), {}, r"\[0, 11\)"),
    (torch.tensor([1, 2]), {}, r"shape \(B, T\).*idx\[None\]"),
    (torch.tensor([[1, 2]]), {"top_p": 0.0}, r"top_p .*\(0, 1\]"),
    (torch.tensor([[1, 2]]), {"top_p": 1.5}, r"top_p .*\(0, 1\]"),
    (torch.tensor([[1, 2]]), {"top_k": 0}, "top_k .*>= 1"),
    (torch.tensor([[1, 2]]), {"temperature": -0.5}, "temperature .*>= 0"),
    (torch.tensor([[1, 2]]), {"temperature": float("nan")}, "temperature .*>= 0"),
    (torch.tensor([[1, 2]]), {"max_new_tokens": -1}, "max_new_tokens"),
])
def test_generate_raises_clear_errors(prompt, kwargs, message):
    model = tiny_gpt()
    kwargs = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        model.generate(prompt, **kwargs)


def test_forward_rejects_windows_longer_than_the_context():
    with pytest.raises(ValueError, match="exceed the context length"):
        tiny_gpt(block_size=8)(torch.zeros(1, 9, dtype=torch.long))


def test_config_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="not divisible"):
        GPTConfig(n_embd=10, n_head=4)


def test_config_rejects_unknown_positions_and_odd_rotary_heads():
    with pytest.raises(ValueError, match="positions must be 'learned' or 'rotary'"):
        GPTConfig(positions="sinusoidal")
    with pytest.raises(ValueError, match="even head size"):
        GPTConfig(n_embd=12, n_head=4, positions="rotary")


# ------------------------------------------------------------------ rotary positions


def test_rotary_gpt_is_causal_and_its_two_attention_paths_and_its_cache_agree():
    fast, slow = tiny_gpt(positions="rotary"), tiny_gpt(positions="rotary", fast=False)
    assert fast.wpe is None and fast.num_params() == fast.num_params(non_embedding=False)  # no position table
    x = torch.randint(V, (2, 12), generator=torch.Generator().manual_seed(3))
    y = x.clone()
    y[:, 6] = (y[:, 6] + 1) % V
    with torch.no_grad():
        full = fast(x)[0]
        torch.testing.assert_close(slow(x)[0], full, rtol=1e-5, atol=1e-5)
        assert (fast(y)[0] - full)[:, :6].abs().max() < 1e-5  # the past does not see the future
        cache = KVCache(2)
        parts = [fast(x[:, :5], cache=cache)[0], fast(x[:, 5:9], cache=cache)[0]]
        parts += [fast(x[:, t : t + 1], cache=cache)[0] for t in range(9, 12)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)
    # generation past the context (12): the same tokens with and without the cache
    cached, uncached = (fast.generate(x[:, :3], 20, generator=torch.Generator().manual_seed(0), use_cache=c)
                        for c in (True, False))
    assert torch.equal(cached, uncached)


# ------------------------------------------------------------------- the recipe


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    from companion.recipes.gpt import Config, lr_at

    cfg = Config(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100)
    assert lr_at(cfg, 0, 0.0) == pytest.approx(1e-4)  # 1/10 of the peak
    assert lr_at(cfg, 9, 0.09) == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * 0.09)))
    assert lr_at(cfg, 50, 0.5) == pytest.approx(5.5e-4)
    assert lr_at(cfg, 100, 1.0) == pytest.approx(1e-4)


def _tiny_recipe(**kw):
    from companion.recipes.gpt import Config

    return Config(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_steps=6, warmup_steps=2, **kw)


@pytest.mark.slow
def test_resumed_training_equals_uninterrupted_training(tmp_path):
    from companion.recipes import gpt as recipe

    cfg = _tiny_recipe()
    straight = recipe.build_model(cfg)
    recipe.train(cfg, straight, progress=False)

    model = recipe.build_model(cfg)
    state = recipe.init_state(cfg, model)
    stop = {"at": 3}

    def save_at_3(step, history):
        if step + 1 == stop["at"]:
            torch.save({"model": model.state_dict(), "state": state.state_dict()}, tmp_path / "ckpt.pt")
            raise KeyboardInterrupt  # the run is killed here

    with pytest.raises(KeyboardInterrupt):
        recipe.train(cfg, model, progress=False, callback=save_at_3, state=state)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed = recipe.build_model(cfg)
    resumed.load_state_dict(ckpt["model"])
    state2 = recipe.init_state(cfg, resumed)
    state2.load_state_dict(ckpt["state"])
    history = recipe.train(cfg, resumed, progress=False, state=state2)
    assert state2.step == 6 and len(history["loss"]) == 6
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_time_budget_stops_training():
    from companion.recipes import gpt as recipe

    cfg = _tiny_recipe(time_budget=0.0)
    history = recipe.train(cfg, recipe.build_model(cfg), progress=False)
    assert len(history["loss"]) == 0


def test_evaluate_and_sample_follow_the_recipe_contract():
    from companion.recipes import gpt as recipe

    cfg = _tiny_recipe(sample_length=20)
    model = recipe.build_model(cfg)
    metrics = recipe.evaluate(cfg, model)
    # an untrained model is close to uniform over the 65 characters
    assert abs(metrics["val_loss"] - math.log(65)) < 0.1
    assert metrics["val_bpc"] == pytest.approx(metrics["val_loss"] / math.log(2))
    texts = recipe.sample(cfg, model, 2, generator=torch.Generator().manual_seed(0))
    assert len(texts) == 2 and all(len(t) == 21 and t[0] == "\n" for t in texts)


def test_bpe_data_are_learned_on_the_training_text_and_scored_in_bits_per_character():
    from companion.data import load_shakespeare, train_val_split
    from companion.recipes import gpt as recipe

    cfg = _tiny_recipe(tokenizer="bpe", bpe_vocab_size=300)
    tok, train_ids, val_ids = recipe.load_data(cfg)
    train_text, val_text = train_val_split(load_shakespeare())
    assert tok.vocab_size == 300 and tok.decode(val_ids) == val_text and tok.decode(train_ids) == train_text
    assert len(val_ids) < 0.8 * len(val_text)  # the merges compress
    model = recipe.build_model(cfg)
    torch.nn.init.zeros_(model.lm_head.weight)  # tied to the embedding: uniform logits over the vocabulary
    metrics = recipe.evaluate(cfg, model)
    assert metrics["val_loss"] == pytest.approx(math.log(300), abs=1e-4)
    assert metrics["val_chars"] == len(tok.decode(val_ids[1:]))
    assert metrics["val_bpc"] == pytest.approx(
        math.log(300) * (len(val_ids) - 1) / (metrics["val_chars"] * math.log(2)), rel=1e-4)
    with pytest.raises(ValueError, match="tokenizer must be 'char' or 'bpe'"):
        _tiny_recipe(tokenizer="words")


def test_generate_text_counts_the_prompt_in_max_length_as_hugging_face_does():
    from companion.recipes import gpt as recipe

    cfg = _tiny_recipe()
    model = recipe.build_model(cfg)
    text = recipe.generate_text(cfg, model, "ROMEO:", max_length=15, top_k=5,
                                generator=torch.Generator().manual_seed(0))
    assert text.startswith("ROMEO:") and len(text) == 15
    greedy = [recipe.generate_text(cfg, model, "ROMEO:", max_length=10, temperature=0.0) for _ in range(2)]
    assert greedy[0] == greedy[1]
    with pytest.raises(ValueError, match="counts the prompt's 6 tokens"):
        recipe.generate_text(cfg, model, "ROMEO:", max_length=5)


# ----------------------------------------------------------------- exercise checkers


def test_check_top_p_filter_accepts_the_nucleus_and_rejects_off_by_one(capsys):
    from companion.gpt import check_top_p_filter

    assert check_top_p_filter(top_p_filter)

    def off_by_one(logits, p):  # drops the token that crosses p: mass may end below p
        probs, order = logits.softmax(-1).sort(-1, descending=True)
        remove = probs.cumsum(-1) > p
        return logits.masked_fill(torch.zeros_like(remove).scatter(-1, order, remove), float("-inf"))

    assert not check_top_p_filter(off_by_one)
    assert "Not yet:" in capsys.readouterr().out


def test_check_kv_cache_floats():
    from companion.gpt import check_kv_cache_floats

    assert check_kv_cache_floats(2 * 4 * 64 * 128, n_layer=4, n_ctx=64, n_embd=128)
    assert not check_kv_cache_floats(4 * 64 * 128, n_layer=4, n_ctx=64, n_embd=128)


def test_the_command_line_the_gpt_chapter_shows_trains_the_benchmark_configuration():
    """03_2 shows the benchmark run as a ``python -m companion train gpt ...`` command: it must be the same run."""
    import dataclasses
    import json
    import shlex
    from pathlib import Path

    from companion.cli import build_parser
    from companion.recipes import gpt as recipe
    from companion.runs import make_config

    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "03_2_gpt.ipynb").read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    start = text.index("python -m companion train gpt")
    command = text[start:text.index("\n", text.index("--out", start))].replace("\\\n", " ")
    args = build_parser().parse_args(shlex.split(command)[3:])
    shown = make_config("gpt", {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")})
    bench = recipe.benchmark_config()
    # the command stops on the time budget; max_steps is only an upper bound that is never reached
    assert dataclasses.replace(shown, max_steps=bench.max_steps) == bench
