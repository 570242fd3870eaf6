r"""Scale-out: the same training code on one process or on N processes under ``torchrun``
(appendix "Scaling out").

Data parallelism (数据并行)
------------------------------
``W`` processes (*ranks*) each hold a full copy of the model. At every step rank ``r`` takes
its own batch :math:`\mathcal B_r` of :math:`B` examples and computes the gradient of its
mean loss; the gradients are then averaged over the ranks (an *all-reduce*, 全归约) before
the optimizer step:

.. math::

    g = \frac1W \sum_{r=0}^{W-1} g_r, \qquad
    g_r = \nabla_\theta \frac1B \sum_{i \in \mathcal B_r} \ell(x_i; \theta)
        \quad\Longrightarrow\quad
    g = \nabla_\theta \frac{1}{WB} \sum_{i \in \mathcal B_0 \cup \dots \cup \mathcal B_{W-1}} \ell(x_i; \theta),

so one data-parallel step on ``W`` ranks equals one step on a global batch of ``W·B``
examples, and the replicas, which start from the same weights and apply the same update,
stay identical. :class:`torch.nn.parallel.DistributedDataParallel` (DDP) does the
averaging during ``backward()`` (bucket by bucket, overlapped with the computation of the
remaining gradients), broadcasts rank 0's parameters when it wraps the model, and rank 0's
buffers before every forward. A :class:`torch.utils.data.DistributedSampler` gives each rank
a disjoint shard of every epoch's shuffled order: an epoch of ``N`` examples then takes
``ceil(ceil(N / W) / B)`` steps per rank.

``torchrun --nproc_per_node=W ...`` starts the ``W`` processes and sets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` for each; :func:`init`
reads them and joins the process group: backend ``gloo`` on CPUs, ``nccl`` on CUDA GPUs
(one GPU per process, ``cuda:LOCAL_RANK``).

Everything here is a no-op on a single process: :func:`data_parallel` returns the model
itself and :func:`minibatches` is :func:`companion.train.minibatches`, so a recipe written
with these helpers trains exactly as before when it is not launched by ``torchrun``.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from companion.checks import verdict
from companion.train import minibatches as _single_minibatches

__all__ = [
    "DistInfo",
    "env_info",
    "init",
    "shutdown",
    "is_distributed",
    "rank",
    "world_size",
    "is_main",
    "barrier",
    "rank_seed",
    "data_parallel",
    "unwrap",
    "shard_indices",
    "minibatches",
    "batch_stream",
    "steps_per_epoch",
    "all_reduce_mean",
    "replica_checksums",
    "state_checksum",
    "broadcast_buffers",
    "broadcast_module",
    "check_scale_out_steps",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank among ``world_size`` and the backend and device it uses."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, evaluates and writes checkpoints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def env_info() -> DistInfo:
    """The rank and world size that ``torchrun`` set in the environment (1 process if none)."""
    world = _env_int("WORLD_SIZE", 1)
    rank_ = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank_)
    if world < 1 or not 0 <= rank_ < world:
        raise ValueError(f"bad torchrun environment: RANK={rank_}, WORLD_SIZE={world} (need 0 <= RANK < WORLD_SIZE)")
    return DistInfo(rank=rank_, local_rank=local, world_size=world)


def init(backend: str | None = None, *, timeout_s: float = 300.0) -> DistInfo:
    """Join the process group that ``torchrun`` set up; a no-op (rank 0 of 1) without ``torchrun``.

    Args:
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (CUDA); by default ``nccl`` when a GPU is
            visible, else ``gloo``.
        timeout_s: how long a collective may wait for the other ranks before failing.

    Returns:
        This process's :class:`DistInfo`. With ``nccl``, the current CUDA device is set to
        ``cuda:LOCAL_RANK``.
    """
    info = env_info()
    if info.world_size == 1:
        return info
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    device = "cpu"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError("backend 'nccl' needs CUDA GPUs, but torch.cuda.is_available() is False; use 'gloo'")
        torch.cuda.set_device(info.local_rank)
        device = f"cuda:{info.local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(info.rank, info.local_rank, info.world_size, backend, device)


def shutdown() -> None:
    """Leave the process group (call once at the end of a ``torchrun`` job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0, the process that logs and writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank gets here (no-op on one process)."""
    if is_distributed():
        dist.barrier()


def rank_seed(seed: int) -> int:
    """A per-rank seed for noise (latents, dropout, augmentation): ``seed`` itself on rank 0.

    Ranks must share the *data order* seed (the sampler's) but should draw different noise,
    or every rank would add the same latent vectors to different images.
    """
    return seed + 1_000_003 * rank()


# ----------------------------------------------------------------------------- models


class _MethodCall(nn.Module):
    """Lets DDP run any method of the wrapped model as its ``forward`` (e.g. ``model.loss``)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, method: str, *args, **kwargs):
        return getattr(self.module, method)(*args, **kwargs)


class _DataParallel:
    """A DDP-wrapped model whose listed methods run through DDP (so their gradients are averaged).

    ``net(x)`` runs ``model.forward``; ``net.loss(x)`` runs ``model.loss`` when ``"loss"`` is
    listed. Any other attribute is the model's own.
    """

    def __init__(self, model: nn.Module, methods: Sequence[str], **ddp_kwargs):
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.module = model
        self._methods = tuple(methods)
        device_ids = None
        param = next(model.parameters(), None)
        if param is not None and param.device.type == "cuda":
            device_ids = [param.device.index]
        self.ddp = DDP(_MethodCall(model), device_ids=device_ids, **ddp_kwargs)

    def __call__(self, *args, **kwargs):
        return self.ddp("forward", *args, **kwargs)

    def __getattr__(self, name: str):
        if name in ("module", "_methods", "ddp"):
            raise AttributeError(name)
        if name in self._methods:
            return lambda *args, **kwargs: self.ddp(name, *args, **kwargs)
        return getattr(self.module, name)


def data_parallel(model: nn.Module, methods: Sequence[str] = ("forward",), **ddp_kwargs):
    """Wrap ``model`` in :class:`~torch.nn.parallel.DistributedDataParallel`; return it as is on one process.

    Args:
        model: the module to train; its parameters must already be on this rank's device.
        methods: the methods whose outputs are differentiated (``"forward"`` for ``net(x)``,
            ``"loss"`` for ``net.loss(x)``, ...); they run through DDP so that ``backward()``
            averages the gradients over the ranks. Other attributes pass through unchanged.
        ddp_kwargs: passed to DDP (e.g. ``find_unused_parameters=True``).

    Returns:
        On one process, ``model`` itself. Under ``torchrun``, a wrapper: ``net(x)``,
        ``net.<method>(...)`` for the listed methods; ``net.module`` is the model, whose
        ``state_dict`` is the one to save.
    """
    if isinstance(methods, str):
        methods = (methods,)
    for m in methods:
        if not callable(getattr(model, m, None)):
            raise AttributeError(f"{type(model).__name__} has no method {m!r} to run through DDP")
    if not is_distributed():
        return model
    return _DataParallel(model, methods, **ddp_kwargs)


def unwrap(model) -> nn.Module:
    """The plain model inside a :func:`data_parallel` wrapper (or the model itself)."""
    return model.module if isinstance(model, _DataParallel) else model


# ------------------------------------------------------------------------------- data


_current_rank, _current_world = rank, world_size  # the functions; some arguments below share their names


def _rank_world(rank_: int | None, world: int | None) -> tuple[int, int]:
    world = _current_world() if world is None else world
    rank_ = _current_rank() if rank_ is None else rank_
    if world < 1 or not 0 <= rank_ < world:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank_}, world_size={world}")
    return rank_, world


def shard_indices(n: int, *, seed: int, epoch: int, shuffle: bool = True, drop_last: bool = False,
                  rank: int | None = None, world_size: int | None = None) -> Tensor:
    """This rank's example indices for one epoch, from a :class:`~torch.utils.data.DistributedSampler`.

    All ranks draw the same permutation (seeded by ``seed + epoch``) and rank ``r`` keeps
    positions ``r, r + W, r + 2W, ...``; the permutation is padded by repeating its start
    (``drop_last=False``) or cut (``drop_last=True``) to a multiple of ``W``, so every rank
    has ``ceil(n / W)`` (or ``floor(n / W)``) indices.
    """
    from torch.utils.data import DistributedSampler

    rank_, world = _rank_world(rank, world_size)
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank_, shuffle=shuffle, seed=seed,
                                 drop_last=drop_last)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def minibatches(*tensors: Tensor, batch_size: int, generator: torch.Generator | None = None, seed: int = 0,
                epoch: int = 0, shuffle: bool = True, drop_last: bool = False, rank: int | None = None,
                world_size: int | None = None) -> Iterator[tuple[Tensor, ...]]:
    """One epoch of this rank's mini-batches.

    On one process this is :func:`companion.train.minibatches` (shuffled by ``generator``),
    unchanged. On ``W`` ranks the epoch's order comes from :func:`shard_indices` (seeded by
    ``seed`` and ``epoch``, the same on every rank) and each rank batches its own shard.
    """
    rank_, world = _rank_world(rank, world_size)
    if world == 1:
        yield from _single_minibatches(*tensors, batch_size=batch_size, generator=generator, shuffle=shuffle,
                                       drop_last=drop_last)
        return
    if not tensors:
        raise ValueError("minibatches() needs at least one tensor")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = tensors[0].shape[0]
    for i, t in enumerate(tensors[1:], 1):
        if t.shape[0] != n:
            raise ValueError(f"tensor 0 has {n} examples but tensor {i} has {t.shape[0]}")
    idx = shard_indices(n, seed=seed, epoch=epoch, shuffle=shuffle, drop_last=drop_last, rank=rank_,
                        world_size=world)
    stop = len(idx) - len(idx) % batch_size if drop_last else len(idx)
    for start in range(0, stop, batch_size):
        sel = idx[start : start + batch_size]
        yield tuple(t[sel] for t in tensors)


def batch_stream(*tensors: Tensor, batch_size: int, generator: torch.Generator | None = None, seed: int = 0,
                 drop_last: bool = False) -> Iterator[tuple[Tensor, ...]]:
    """An endless stream of :func:`minibatches`, epoch after epoch (for step-counted training)."""
    epoch = 0
    while True:
        yield from minibatches(*tensors, batch_size=batch_size, generator=generator, seed=seed, epoch=epoch,
                               drop_last=drop_last)
        epoch += 1


def steps_per_epoch(n: int, batch_size: int, *, drop_last: bool = False, world_size: int | None = None) -> int:
    """Mini-batches per rank in an epoch of ``n`` examples: ``ceil(ceil(n / W) / B)`` (``W = 1``: ``ceil(n / B)``)."""
    world = _current_world() if world_size is None else world_size
    if n < 0 or batch_size < 1 or world < 1:
        raise ValueError(f"need n >= 0, batch_size >= 1, world_size >= 1; got {n}, {batch_size}, {world}")
    if world == 1:
        return n // batch_size if drop_last else math.ceil(n / batch_size)
    per_rank = n // world if drop_last else math.ceil(n / world)
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)


# ---------------------------------------------------------------------------- helpers


def all_reduce_mean(value: float | Tensor) -> float:
    """The mean of a scalar over the ranks (for logging a global loss); the value itself on one process."""
    t = torch.as_tensor(value, dtype=torch.float64).detach().clone().reshape(1)
    if is_distributed():
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return float(t.item())


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (batch-norm running statistics, ...) to every rank; no-op on one process.

    DDP broadcasts rank 0's buffers at the start of every forward pass, so after the *last*
    forward each rank still holds the statistics of its own last batch. Call this after training
    so that every replica, and the checkpoint rank 0 writes, agree.
    """
    if not is_distributed():
        return
    for buffer in unwrap(model).buffers():
        dist.broadcast(buffer.data, src=src)


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers of ``module`` to every rank; no-op on one process.

    For updates DDP does not see, made from each rank's own data (a VQ-VAE's codebook initialised
    from a batch, dead codes restarted): broadcasting the result keeps the replicas identical.
    """
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(unwrap(module).parameters()) + list(unwrap(module).buffers()):
            dist.broadcast(t.data, src=src)


def state_checksum(model: nn.Module) -> str:
    """A SHA-256 of the model's ``state_dict`` (names, shapes and exact bytes of every tensor)."""
    h = hashlib.sha256()
    for name, t in unwrap(model).state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def replica_checksums(model: nn.Module) -> list[str]:
    """Every rank's :func:`state_checksum`, gathered on all ranks (one entry on one process).

    Identical entries mean the replicas hold bit-identical weights, as data parallelism promises.
    """
    mine = state_checksum(model)
    if not is_distributed():
        return [mine]
    out: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return [str(s) for s in out]


def check_scale_out_steps(steps_one: int, steps_per_rank: int, global_batch: int, lr: float, *, n: int = 60_000,
                          batch_size: int = 128, world_size: int = 4, base_lr: float = 1e-3) -> bool:
    """Exercise checker (appendix "Scaling out"): steps per epoch on one process and per rank on
    ``world_size`` ranks (from :func:`steps_per_epoch`), the global batch ``W B`` and the
    learning rate of the linear scaling rule, ``W`` times ``base_lr`` (relative tolerance 1e-6)."""
    truth = {"steps on one process": steps_per_epoch(n, batch_size, world_size=1),
             "steps per rank": steps_per_epoch(n, batch_size, world_size=world_size),
             "global batch": world_size * batch_size, "learning rate": world_size * base_lr}
    given = dict(zip(truth, (steps_one, steps_per_rank, global_batch, lr), strict=True))
    wrong = [f"{name}: {given[name]} (expected {value})" for name, value in truth.items()
             if not math.isclose(float(given[name]), value, rel_tol=1e-6)]
    return verdict(not wrong, "; ".join(wrong) if wrong else
                   f"{truth['steps on one process']} steps on one process, {truth['steps per rank']} per rank on "
                   f"{world_size} ranks, global batch {truth['global batch']}, "
                   f"learning rate {truth['learning rate']:g}")
