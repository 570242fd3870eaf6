"""Shared fixtures: a private data root with small, well-formed IDX files."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from companion import data


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (magic 0x0000 08 ndim, big-endian sizes)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.tobytes()


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and much faster than on two on a busy machine).

    Test modules of tiny models use it for every test: ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A data root with a tiny 'MNIST' (gzipped test split only) and hashes patched to match.

    Returns a dict with the directory and the arrays written.
    """
    rng = np.random.default_rng(0)
    n = 10_000  # the fallback split slices 8,000 / 2,000, so keep the official size
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    files = {"t10k-images-idx3-ubyte": idx_bytes(images), "t10k-labels-idx1-ubyte": idx_bytes(labels)}
    hashes = dict(data.MNIST_FILES)
    for name, payload in files.items():
        (root / "mnist" / f"{name}.gz").write_bytes(gzip.compress(payload))
        hashes[name] = hashlib.md5(payload).hexdigest()
    monkeypatch.setattr(data, "MNIST_FILES", hashes)
    monkeypatch.setenv("COMPANION_DATA", str(root))
    monkeypatch.setenv("COMPANION_OFFLINE", "1")
    monkeypatch.delenv("COMPANION_MNIST_FALLBACK", raising=False)
    monkeypatch.setattr(data, "_fallback_warned", False)
    return {"root": root, "images": images, "labels": labels}


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def mnist(monkeypatch, tmp_path):
    """MNIST's test split ``(x, y)`` from local files only, with a private weight cache; else a skip.

    Never downloads (``COMPANION_OFFLINE=1``): the data comes from ``$COMPANION_DATA`` or, when that
    is unset, from the offline copy beside the project (``../shared/data``) if there is one. Without
    the 60,000 training images the documented fallback split is used.
    """
    import os

    from companion.data import DataError, load_mnist

    if not os.environ.get("COMPANION_DATA") and (SHARED_DATA / "mnist").exists():
        monkeypatch.setenv("COMPANION_DATA", str(SHARED_DATA))
    monkeypatch.setenv("COMPANION_OFFLINE", "1")
    monkeypatch.setenv("COMPANION_MNIST_FALLBACK", "1")
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    try:
        return load_mnist("test")
    except DataError as exc:
        pytest.skip(f"MNIST is not available locally (set COMPANION_DATA): {exc}")


@pytest.fixture
def mnist_env(mnist, tmp_path):
    """The offline MNIST environment of :func:`mnist` (or a skip); returns a private working directory."""
    return tmp_path


@pytest.fixture
def lg():
    """A random linear-Gaussian latent-variable model (x in R^5, z in R^2) and 7 samples x from it."""
    from companion.linear_gaussian import LinearGaussianLVM

    g = torch.Generator().manual_seed(0)
    model = LinearGaussianLVM.random(x_dim=5, z_dim=2, sigma=0.6, generator=g)
    x, _ = model.sample(7, generator=g)
    return model, x


@pytest.fixture
def shakespeare_env(monkeypatch):
    """tiny-shakespeare from local files only (``$COMPANION_DATA`` or ``../shared/data``), else a skip."""
    import os

    from companion.data import DataError, load_shakespeare

    if not os.environ.get("COMPANION_DATA") and (SHARED_DATA / "tinyshakespeare").exists():
        monkeypatch.setenv("COMPANION_DATA", str(SHARED_DATA))
    monkeypatch.setenv("COMPANION_OFFLINE", "1")
    try:
        load_shakespeare()
    except DataError as exc:
        pytest.skip(f"tiny-shakespeare is not available locally (set COMPANION_DATA): {exc}")
