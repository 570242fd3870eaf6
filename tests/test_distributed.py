"""Tests of companion.distributed and of training under torchrun (appendix "Scaling out")."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from companion import distributed as D
from companion.train import minibatches

from .conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ sharding


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 4), st.integers(0, 5), st.booleans())
def test_distributed_sampler_shards_are_disjoint_equal_sized_and_cover_the_epoch(n, world, epoch, drop_last):
    shards = [D.shard_indices(n, seed=3, epoch=epoch, rank=r, world_size=world, drop_last=drop_last)
              for r in range(world)]
    per_rank = n // world if drop_last else math.ceil(n / world)
    assert all(len(s) == per_rank for s in shards)
    together = torch.cat(shards)
    if drop_last:  # no example twice
        assert len(set(together.tolist())) == len(together)
    else:  # every example at least once; the padding repeats fewer than `world` of them
        assert set(together.tolist()) == set(range(n))
        assert len(together) - n < world


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 50), st.integers(1, 4), st.booleans())
def test_steps_per_epoch_counts_the_batches_each_rank_gets(n, batch_size, world, drop_last):
    x = torch.arange(n)
    counted = sum(1 for _ in D.minibatches(x, batch_size=batch_size, generator=torch.Generator().manual_seed(0),
                                           rank=world - 1, world_size=world, drop_last=drop_last))
    assert D.steps_per_epoch(n, batch_size, world_size=world, drop_last=drop_last) == counted


def test_ranks_see_the_same_permutation_split_between_them_and_a_new_one_each_epoch():
    a0 = D.shard_indices(10, seed=0, epoch=0, rank=0, world_size=2)
    a1 = D.shard_indices(10, seed=0, epoch=0, rank=1, world_size=2)
    assert set(a0.tolist()).isdisjoint(a1.tolist())
    interleaved = torch.stack([a0, a1], 1).flatten()  # rank r holds positions r, r + W, ...
    assert sorted(interleaved.tolist()) == list(range(10))
    assert not torch.equal(D.shard_indices(10, seed=0, epoch=1, rank=0, world_size=2), a0)


def test_on_one_process_minibatches_are_exactly_the_single_process_ones():
    x, y = torch.randn(37, 3), torch.arange(37)
    ours = list(D.minibatches(x, y, batch_size=8, generator=torch.Generator().manual_seed(5), seed=99))
    theirs = list(minibatches(x, y, batch_size=8, generator=torch.Generator().manual_seed(5)))
    assert len(ours) == len(theirs) == 5
    for (a, b), (c, d) in zip(ours, theirs, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_bad_rank_or_batch_size_is_rejected():
    with pytest.raises(ValueError, match="rank"):
        D.shard_indices(10, seed=0, epoch=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        D.steps_per_epoch(10, 0)


def test_env_info_reads_torchrun_variables(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert D.env_info() == D.DistInfo(rank=3, local_rank=1, world_size=4)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK"):
        D.env_info()


# ------------------------------------------------------------------ models


class TwoWays(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x)

    def loss(self, x, *, scale=1.0):
        return scale * self.lin(x).pow(2).mean()


def test_data_parallel_is_the_identity_without_torchrun():
    model = TwoWays()
    assert D.data_parallel(model, methods=("forward", "loss")) is model
    assert D.unwrap(model) is model and D.world_size() == 1 and D.rank() == 0 and D.is_main()
    assert D.rank_seed(7) == 7
    with pytest.raises(AttributeError, match="no method 'elbo'"):
        D.data_parallel(model, methods=("elbo",))


@pytest.mark.slow
def test_ddp_wrapper_routes_methods_through_ddp_and_keeps_gradients(tmp_path):
    """In a 1-rank gloo group the wrapped ``net.loss`` must give the plain model's gradients."""
    if dist.is_initialized():
        pytest.skip("a process group is already running")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model, twin = TwoWays(), TwoWays()
        twin.load_state_dict(model.state_dict())
        net = D._DataParallel(model, ("forward", "loss"))
        x = torch.randn(5, 3)
        net.loss(x, scale=2.0).backward()
        twin.loss(x, scale=2.0).backward()
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad)
        torch.testing.assert_close(net(x), twin(x))
        assert D.unwrap(net) is model and net.lin is model.lin  # other attributes are the model's
    finally:
        dist.destroy_process_group()


def test_state_checksum_sees_every_bit():
    torch.manual_seed(0)
    a, b = TwoWays(), TwoWays()
    b.load_state_dict(a.state_dict())
    assert D.state_checksum(a) == D.state_checksum(b) == D.replica_checksums(a)[0]
    with torch.no_grad():
        b.lin.weight[0, 0] = torch.nextafter(b.lin.weight[0, 0], torch.tensor(1.0))
    assert D.state_checksum(a) != D.state_checksum(b)


# ------------------------------------------------------------------ torchrun


needs_mnist = pytest.mark.skipif(not (SHARED_DATA / "mnist").exists() and not os.environ.get("COMPANION_DATA"),
                                 reason="needs MNIST (the offline copy or COMPANION_DATA)")


def torchrun(tmp_path, world: int, args: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=world -m companion train ...`` on 127.0.0.1, offline data, a private cache."""
    env = dict(os.environ)
    if (SHARED_DATA / "mnist").exists():
        env.update(COMPANION_DATA=str(SHARED_DATA), COMPANION_OFFLINE="1", COMPANION_MNIST_FALLBACK="1")
    # never the network: the ranks run outside pytest's socket guard
    env.update(COMPANION_CACHE=str(tmp_path / "cache"), COMPANION_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "companion", "train", *args, "--no-progress", "--no-eval"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
@needs_mnist
def test_torchrun_two_cpu_ranks_end_with_identical_weights_after_the_expected_steps(tmp_path):
    from companion.recipes import classifier as recipe
    from companion.runs import load_checkpoint

    n, batch, epochs, world = 1000, 100, 2, 2
    out = tmp_path / "run"
    proc = torchrun(tmp_path, world, ["classifier", "--epochs", str(epochs), "--train-size", str(n),
                                      "--batch-size", str(batch), "--out", str(out)])
    result = json.loads((out / "metrics.json").read_text())
    assert result["world_size"] == world and result["backend"] == "gloo"
    checksums = result["replica_checksums"]
    assert len(checksums) == world and len(set(checksums)) == 1, checksums  # identical weights on both ranks
    # each rank reads ceil(n / W) = 500 examples per epoch in batches of 100
    assert result["steps"] == epochs * math.ceil(math.ceil(n / world) / batch) == 10
    ckpt = load_checkpoint(out / "checkpoint.pt", "classifier")
    assert ckpt["steps"] == 10 and len(ckpt["history"]["loss"]) == 10
    model = recipe.build_model(recipe.Config(**ckpt["config"]))
    initial = D.state_checksum(model)
    model.load_state_dict(ckpt["state_dict"])
    assert D.state_checksum(model) == checksums[0] != initial  # rank 0 saved what every rank holds, and it trained
    assert proc.stdout.count("steps in") == 1  # only rank 0 logs


@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("model, args, steps", [
    # two DDP-wrapped networks (G with batch norm, D), per-rank noise
    ("cgan", ["--steps", "3", "--batch-size", "16", "--hidden", "64"], 3),
    # a codebook initialised from each rank's batch and dead codes restarted: broadcast from rank 0
    ("vqvae", ["--epochs", "3", "--train-size", "512", "--channels", "8", "--dead-code-window", "2"], 3 * 2),
])
def test_torchrun_keeps_replicas_identical_for_the_generative_recipes(model, args, steps, tmp_path):
    pytest.importorskip(f"companion.recipes.{'gan' if 'gan' in model else 'vae'}")
    out = tmp_path / model
    torchrun(tmp_path, 2, [model, *args, "--out", str(out)])
    result = json.loads((out / "metrics.json").read_text())
    assert result["steps"] == steps and result["world_size"] == 2
    assert len(set(result["replica_checksums"])) == 1, result["replica_checksums"]
