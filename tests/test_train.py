"""companion.train: seeding, mini-batches, the training loop and the weight cache."""

from __future__ import annotations

import pytest
import torch

import companion
from companion.train import History, minibatches, seed_everything, train_loop, train_or_load


def test_same_seed_gives_the_same_numbers():
    seed_everything(3)
    a = torch.randn(5), torch.nn.Linear(4, 2).weight.detach().clone()
    seed_everything(3)
    b = torch.randn(5), torch.nn.Linear(4, 2).weight.detach().clone()
    torch.testing.assert_close(a, b)
    g1, g2 = seed_everything(4), seed_everything(4)
    torch.testing.assert_close(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_seed_must_be_an_int():
    with pytest.raises(TypeError, match="seed must be an int"):
        seed_everything(1.5)


def test_minibatches_cover_every_example_once_per_epoch():
    x, y = torch.arange(10), torch.arange(10) * 2
    batches = list(minibatches(x, y, batch_size=3, generator=torch.Generator().manual_seed(0)))
    assert [len(b[0]) for b in batches] == [3, 3, 3, 1]
    seen = torch.cat([b[0] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    assert all(torch.equal(bx * 2, by) for bx, by in batches)
    assert [len(b[0]) for b in minibatches(x, batch_size=3, drop_last=True)] == [3, 3, 3]


def test_minibatches_reject_misaligned_tensors():
    with pytest.raises(ValueError, match="tensor 0 has 4 examples but tensor 1 has 3"):
        next(minibatches(torch.zeros(4), torch.zeros(3), batch_size=2))


def test_train_loop_really_optimises_and_records_history():
    seed_everything(0)
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)

    def step(i):
        loss = (w - 3.0).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    history = train_loop(step, 100, progress=False)
    assert len(history["loss"]) == 100
    assert history["loss"][0] == pytest.approx(9.0)
    assert history.last("loss") < 1e-6 and history.seconds > 0


def test_train_or_load_trains_once_then_loads_identical_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path))
    monkeypatch.delenv("COMPANION_RETRAIN", raising=False)
    calls = []

    def train(model):
        calls.append(1)
        with torch.no_grad():
            model.weight.add_(1.0)
        h = History()
        h.metrics["loss"] += [2.0, 1.0]
        return h

    seed_everything(0)
    m1 = torch.nn.Linear(3, 2)
    h1 = train_or_load("toy", m1, train, {"steps": 2})
    seed_everything(1)
    m2 = torch.nn.Linear(3, 2)
    h2 = train_or_load("toy", m2, train, {"steps": 2})
    assert len(calls) == 1
    torch.testing.assert_close(m1.state_dict(), m2.state_dict())
    assert h2["loss"] == h1["loss"] == [2.0, 1.0]
    train_or_load("toy", torch.nn.Linear(3, 2), train, {"steps": 3})  # another config trains anew
    assert len(calls) == 2


def test_package_exports_seed_everything():
    assert companion.seed_everything is seed_everything


def test_weight_average_follows_its_formula_and_copies_into_the_parameters():
    from companion.train import WeightAverage

    p = torch.nn.Parameter(torch.zeros(3))
    avg = WeightAverage([p], decay=0.9)
    expected = torch.zeros(3)
    for i, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0]):
        with torch.no_grad():
            p.fill_(value)
        avg.update(i)
        d = min(0.9, (1 + i) / (10 + i))
        expected = d * expected + (1 - d) * value
    torch.testing.assert_close(avg.average[0], expected)
    assert float(p[0]) == 5.0  # the live weights are untouched until the copy
    avg.copy_to_params()
    torch.testing.assert_close(p.detach(), expected)
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        WeightAverage([p], decay=1.0)
