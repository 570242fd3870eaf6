"""Data: MNIST (IDX files) and tiny-shakespeare, with downloads verified by hash.

Where the data lives
--------------------
Every loader looks in one *data root*:

* ``$COMPANION_DATA`` if set, else the per-user cache directory
  (``~/.cache/companion`` on Linux, from :func:`pooch.os_cache`).
* MNIST files are ``<root>/mnist/<name>`` or ``<root>/mnist/<name>.gz``;
  tiny-shakespeare is ``<root>/tinyshakespeare/input.txt``.

A missing file is downloaded with :mod:`pooch` (progress bar, mirrors tried in
order) unless ``COMPANION_OFFLINE=1``. The check is the md5 of the
*decompressed* bytes, because mirrors re-compress the ``.gz`` files and their
gzip headers differ while the payload is identical.

The offline fallback
--------------------
The 60,000 MNIST training images are large and sometimes unavailable (no network).
Then ``load_mnist("train")`` raises :class:`DataUnavailableError`, *unless* the
reader opts in with ``COMPANION_MNIST_FALLBACK=1``: the first 8,000 official test
images then serve as the training split and the last 2,000 as the test split, and
a :class:`MNISTFallbackWarning` says so (once per process). The two fallback
splits are disjoint, so a model is never evaluated on images it was trained on.
"""

from __future__ import annotations

import gzip
import hashlib
import numbers
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from companion.env import env_flag

__all__ = [
    "DataError",
    "DataUnavailableError",
    "ChecksumError",
    "IDXFormatError",
    "MNISTFallbackWarning",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "SHAKESPEARE_URL",
    "SHAKESPEARE_MD5",
    "data_root",
    "read_idx",
    "load_mnist",
    "mnist_is_fallback",
    "load_shakespeare",
    "CharTokenizer",
    "train_val_split",
]

DATA_ENV = "COMPANION_DATA"
OFFLINE_ENV = "COMPANION_OFFLINE"
FALLBACK_ENV = "COMPANION_MNIST_FALLBACK"

# md5 of the DECOMPRESSED files (the official IDX payloads).
MNIST_FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",  # the mirror torchvision uses
    "https://storage.googleapis.com/cvdf-datasets/mnist/",  # Google's CVDF mirror
)
MNIST_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FALLBACK_TRAIN_SIZE = 8_000  # first 8,000 official test images -> training split

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_MD5 = "6fb458f1232090904fb40fe944165e91"


class DataError(Exception):
    """Base class of every data-loading error in :mod:`companion.data`."""


class DataUnavailableError(DataError, FileNotFoundError):
    """A data file is neither on disk nor downloadable."""


class ChecksumError(DataError):
    """A data file is on disk but its content is not the expected one."""


class IDXFormatError(DataError):
    """A file is not a well-formed IDX file (bad magic number, truncated, ...)."""


class MNISTFallbackWarning(UserWarning):
    """Warns that the offline MNIST fallback split is in use."""


def data_root() -> Path:
    """The directory where datasets are looked for and downloaded to.

    ``$COMPANION_DATA`` if set, else the user cache directory of ``companion``.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("companion"))


def _offline() -> bool:
    return env_flag(OFFLINE_ENV)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:  # truncated or not gzip at all
            raise IDXFormatError(f"{path} is not a valid gzip file ({exc}); delete it and load again") from exc
    return raw


# --------------------------------------------------------------------------- IDX


_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(data: bytes | str | Path) -> np.ndarray:
    """Parse an IDX file (the format of MNIST) into a numpy array.

    The header is two zero bytes, a type code (0x08 = uint8, ...), the number of
    dimensions n, then n big-endian uint32 sizes; the data follows, row-major.

    Args:
        data: the file's bytes, or a path (``.gz`` files are decompressed).

    Raises:
        IDXFormatError: wrong magic number, unknown type code, or a payload whose
            length does not match the sizes in the header.
    """
    name = "IDX data"
    if isinstance(data, (str, Path)):
        name = str(data)
        data = _read_maybe_gzip(Path(data))
    if len(data) < 4:
        raise IDXFormatError(f"{name}: {len(data)} bytes is too short for an IDX header (at least 4)")
    if data[0] != 0 or data[1] != 0:
        raise IDXFormatError(
            f"{name}: bad IDX magic number 0x{data[:4].hex()}; an IDX file starts with two zero bytes, "
            "e.g. 0x00000803 for images or 0x00000801 for labels"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise IDXFormatError(f"{name}: unknown IDX type code 0x{type_code:02x} in magic number 0x{data[:4].hex()}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IDXFormatError(f"{name}: truncated header ({len(data)} bytes, expected {header_len})")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = header_len + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise IDXFormatError(
            f"{name}: header says shape {shape} ({expected} bytes in all) but the file has {len(data)} bytes"
            + (" (truncated download?)" if len(data) < expected else "")
        )
    return np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape).copy()


# ------------------------------------------------------------------ file fetching


def _download(name: str, urls: list[str], directory: Path, md5: str, decompress: bool) -> Path:
    """Download ``name`` from the first mirror that answers; verify; return its path."""
    import pooch

    directory.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        try:
            if decompress:
                out = pooch.retrieve(
                    url, known_hash=None, fname=name + ".gz", path=directory,
                    processor=pooch.Decompress(method="gzip", name=name), progressbar=True,
                )
            else:
                out = pooch.retrieve(url, known_hash=None, fname=name, path=directory, progressbar=True)
        except Exception as exc:  # network errors differ by backend; try the next mirror
            errors.append(f"{url}: {exc.__class__.__name__}: {exc}")
            continue
        out = Path(out)
        got = _md5(out.read_bytes())
        if got != md5:
            out.unlink()
            errors.append(f"{url}: checksum mismatch (md5 {got}, expected {md5}); file removed")
            continue
        return out
    raise DataUnavailableError(f"could not download {name}:\n  " + "\n  ".join(errors))


def _fetch(name: str, subdir: str, md5: str, urls: list[str], decompress: bool) -> bytes:
    """Return the verified bytes of a data file, downloading it if needed."""
    directory = data_root() / subdir
    candidates = [directory / name, directory / (name + ".gz")]
    for path in candidates:
        if path.exists():
            data = _read_maybe_gzip(path)
            got = _md5(data)
            if got != md5:
                raise ChecksumError(
                    f"{path} has md5 {got} (of its decompressed content) but {md5} was expected: "
                    "the file is corrupt or truncated; delete it and load again to re-download"
                )
            return data
    if _offline():
        raise DataUnavailableError(
            f"{name} is not in {directory} and downloads are off ({OFFLINE_ENV}=1). "
            f"Put the file (or {name}.gz) there, point {DATA_ENV} at a folder that has it, "
            f"or unset {OFFLINE_ENV} to download it from {urls[0]}"
        )
    try:
        path = _download(name, urls, directory, md5, decompress)
    except PermissionError as exc:
        raise DataUnavailableError(f"{name} is not in {directory}, which is not writable: {exc}") from exc
    return path.read_bytes()


# ---------------------------------------------------------------------- MNIST

_fallback_warned = False


@dataclass(frozen=True)
class _Split:
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) uint8


def _load_official(split: str) -> _Split:
    img_name, lbl_name = MNIST_SPLIT_FILES[split]
    images = read_idx(_fetch(img_name, "mnist", MNIST_FILES[img_name],
                             [m + img_name + ".gz" for m in MNIST_MIRRORS], True))
    labels = read_idx(_fetch(lbl_name, "mnist", MNIST_FILES[lbl_name],
                             [m + lbl_name + ".gz" for m in MNIST_MIRRORS], True))
    if images.ndim != 3 or labels.ndim != 1:
        raise IDXFormatError(f"MNIST {split}: expected images (N, 28, 28) and labels (N,), "
                             f"got {images.shape} and {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise IDXFormatError(f"MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return _Split(images, labels)


def _fallback_enabled() -> bool:
    return env_flag(FALLBACK_ENV)


def _official_train_or_none() -> _Split | None:
    """The official training split, or None when it is missing and cannot be downloaded."""
    try:
        return _load_official("train")
    except DataUnavailableError:
        return None


def mnist_is_fallback() -> bool:
    """True when MNIST loads use the offline fallback split (see the module docstring)."""
    return _fallback_enabled() and _official_train_or_none() is None


def load_mnist(split: str = "train", *, as_tensor: bool = True, normalize: bool = True):
    """Load an MNIST split.

    Args:
        split: ``"train"`` or ``"test"``.
        as_tensor: return torch tensors (else numpy arrays).
        normalize: images as float32 in [0, 1] (else the raw uint8 pixels).

    Returns:
        ``(images, labels)``: images ``(N, 1, 28, 28)`` (tensor) or ``(N, 28, 28)``
        (numpy), labels ``(N,)`` int64.

    Raises:
        ValueError: unknown split name.
        DataUnavailableError: the files are missing and cannot be downloaded
            (for the training split, unless the fallback is enabled).
        ChecksumError, IDXFormatError: a file on disk is corrupt.
    """
    global _fallback_warned
    if split not in MNIST_SPLIT_FILES:
        raise ValueError(f"unknown MNIST split {split!r}; expected one of {sorted(MNIST_SPLIT_FILES)}")
    train = None
    if split == "train" or _fallback_enabled():
        try:
            train = _load_official("train")
        except DataUnavailableError as exc:
            if not _fallback_enabled():
                raise DataUnavailableError(
                    f"{exc}\nThe 60,000 MNIST training images are missing. Download them with network access "
                    f"(the loader does this by itself), or set {FALLBACK_ENV}=1 to train on the first "
                    f"{FALLBACK_TRAIN_SIZE:,} official test images and test on the last "
                    f"{10_000 - FALLBACK_TRAIN_SIZE:,} instead (smaller; results not comparable to full MNIST)."
                ) from exc
    if (split == "train" or _fallback_enabled()) and train is None:
        if not _fallback_warned:
            # attributed to the module, not to the caller's file: a notebook's caller is a temporary
            # file of its kernel, whose path would otherwise show on every published page
            warnings.warn_explicit(
                f"MNIST training images are not available: using the offline fallback ({FALLBACK_ENV}=1), "
                f"training split = first {FALLBACK_TRAIN_SIZE:,} official test images, "
                f"test split = last {10_000 - FALLBACK_TRAIN_SIZE:,}.",
                MNISTFallbackWarning, filename="companion.data", lineno=0, module="companion.data",
            )
            _fallback_warned = True
        test = _load_official("test")
        sl = slice(None, FALLBACK_TRAIN_SIZE) if split == "train" else slice(FALLBACK_TRAIN_SIZE, None)
        data = _Split(test.images[sl], test.labels[sl])
    elif split == "train":
        data = train
    else:
        data = _load_official("test")

    images, labels = data.images, data.labels.astype(np.int64)
    if not as_tensor:
        return (images.astype(np.float32) / 255.0 if normalize else images), labels
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    x = x.float() / 255.0 if normalize else x
    return x, torch.from_numpy(labels)


# ---------------------------------------------------------- tiny-shakespeare


def load_shakespeare() -> str:
    """The tiny-shakespeare corpus (1,115,394 characters), downloaded and md5-checked."""
    return _fetch("input.txt", "tinyshakespeare", SHAKESPEARE_MD5, [SHAKESPEARE_URL], False).decode("utf-8")


def train_val_split(data, train_fraction: float = 0.9):
    """Split a sequence (string or tensor) into its first ``train_fraction`` and the rest.

    The course's tiny-shakespeare split is 90/10, as in nanoGPT: the validation text is
    the last 10% of the corpus, never seen in training.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    n = int(len(data) * train_fraction)
    return data[:n], data[n:]


class CharTokenizer:
    """A character-level tokenizer: one token id per distinct character of a corpus.

    ``decode(encode(s)) == s`` for every string made of the corpus's characters.

    Args:
        text: the corpus; the vocabulary is its sorted set of characters.
    """

    def __init__(self, text: str):
        if not text:
            raise ValueError("cannot build a tokenizer from an empty text")
        self.chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> torch.Tensor:
        """String -> (len(s),) int64 tensor of token ids."""
        unknown = sorted(set(s) - self.stoi.keys())
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {unknown[:10]!r}")
        return torch.tensor([self.stoi[c] for c in s], dtype=torch.long)

    def decode(self, ids) -> str:
        """Sequence of token ids (a 1-D integer tensor or a list of ints) -> string."""
        if isinstance(ids, torch.Tensor):
            if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
                raise TypeError(f"token ids must be integers, got a tensor of dtype {ids.dtype} "
                                "(sampled ids are long tensors; use .long() only on whole numbers)")
            if ids.ndim != 1:
                raise ValueError(f"decode takes one sequence of ids, shape (T,), got shape {tuple(ids.shape)}; "
                                 "decode each row of a batch separately")
            ids = ids.tolist()
        else:
            ids = list(ids)
            not_int = [i for i in ids if isinstance(i, bool) or not isinstance(i, numbers.Integral)]
            if not_int:
                raise TypeError(f"token ids must be ints, got {not_int[:5]!r} ({type(not_int[0]).__name__})")
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids outside [0, {self.vocab_size}): {bad[:10]}")
        return "".join(self.chars[i] for i in ids)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
