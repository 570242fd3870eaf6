"""companion.data: IDX parsing, hash checks, the offline rule, tiny-shakespeare, the tokenizer."""

from __future__ import annotations

import gzip
import hashlib
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from companion import data
from companion.data import (
    CharTokenizer,
    ChecksumError,
    DataUnavailableError,
    IDXFormatError,
    MNISTFallbackWarning,
    load_mnist,
    read_idx,
    train_val_split,
)

from .conftest import SHARED_DATA, idx_bytes


def test_read_idx_round_trips_an_array():
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(idx_bytes(a)), a)


def test_read_idx_rejects_wrong_magic_number():
    payload = bytearray(idx_bytes(np.zeros((2, 2), np.uint8)))
    payload[0] = 0x1F  # e.g. a gzip file read as raw IDX
    with pytest.raises(IDXFormatError, match="magic number"):
        read_idx(bytes(payload))


def test_read_idx_rejects_unknown_type_code():
    payload = bytearray(idx_bytes(np.zeros((2, 2), np.uint8)))
    payload[2] = 0x42
    with pytest.raises(IDXFormatError, match="type code"):
        read_idx(bytes(payload))


def test_read_idx_reports_a_truncated_file():
    payload = idx_bytes(np.zeros((5, 28, 28), np.uint8))
    with pytest.raises(IDXFormatError, match="truncated"):
        read_idx(payload[:-100])


def test_read_idx_reports_a_truncated_gzip_file(tmp_path):
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:-10])
    with pytest.raises(IDXFormatError, match="gzip"):
        read_idx(path)


def test_load_mnist_test_split_shapes_and_range(fake_mnist):
    x, y = load_mnist("test")
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (10_000,) and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal((x[:, 0] * 255).round().to(torch.uint8).numpy(), fake_mnist["images"])


def test_load_mnist_unknown_split_names_the_choices(fake_mnist):
    with pytest.raises(ValueError, match=r"unknown MNIST split 'validation'.*\['test', 'train'\]"):
        load_mnist("validation")


def test_missing_training_files_offline_raise_and_explain_the_fallback(fake_mnist):
    with pytest.raises(DataUnavailableError, match="COMPANION_MNIST_FALLBACK=1"):
        load_mnist("train")


def test_fallback_is_opt_in_disjoint_and_warns_once(fake_mnist, monkeypatch):
    monkeypatch.setenv("COMPANION_MNIST_FALLBACK", "1")
    with pytest.warns(MNISTFallbackWarning, match="first 8,000") as record:
        x_train, y_train = load_mnist("train")
    # attributed to the module, so that a notebook's output names no temporary file of its kernel
    assert [w.filename for w in record if w.category is MNISTFallbackWarning] == ["companion.data"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        x_test, y_test = load_mnist("test")
    assert len(x_train) == 8_000 and len(x_test) == 2_000
    images = torch.from_numpy(fake_mnist["images"]).float() / 255
    torch.testing.assert_close(x_train[:, 0], images[:8_000])
    torch.testing.assert_close(x_test[:, 0], images[8_000:])
    assert data.mnist_is_fallback()


def test_checksum_mismatch_is_reported_with_the_path(fake_mnist):
    path = fake_mnist["root"] / "mnist" / "t10k-labels-idx1-ubyte.gz"
    labels = fake_mnist["labels"].copy()
    labels[0] = (labels[0] + 1) % 10  # same size, different content
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte.gz has md5"):
        load_mnist("test")


def test_image_label_count_mismatch_is_an_error(fake_mnist, monkeypatch):
    short = idx_bytes(fake_mnist["labels"][:9_999])
    (fake_mnist["root"] / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(short))
    monkeypatch.setitem(data.MNIST_FILES, "t10k-labels-idx1-ubyte", hashlib.md5(short).hexdigest())
    with pytest.raises(IDXFormatError, match="10000 images but 9999 labels"):
        load_mnist("test")


def test_missing_file_offline_names_the_file_and_the_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path))
    monkeypatch.setenv("COMPANION_OFFLINE", "1")
    with pytest.raises(DataUnavailableError, match=r"t10k-images-idx3-ubyte is not in .*COMPANION_DATA"):
        load_mnist("test")
    with pytest.raises(DataUnavailableError, match="input.txt"):
        data.load_shakespeare()


@pytest.fixture
def local_mirror(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "www"``: a stand-in for a download mirror."""
    import functools
    import http.server
    import threading

    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_tries_mirrors_in_order_and_verifies_the_decompressed_payload(tmp_path, local_mirror):
    """The real download code (pooch), against a local HTTP 'mirror' (there is no network here)."""
    www, url = local_mirror
    payload = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
    md5 = hashlib.md5(payload).hexdigest()
    (www / "good.gz").write_bytes(gzip.compress(payload, mtime=123))  # re-gzipped: .gz differs, payload equal
    (www / "bad.gz").write_bytes(gzip.compress(payload[:-1] + b"\x07"))
    out = data._download("f-idx2-ubyte", [url + "missing.gz", url + "good.gz"], tmp_path / "cache", md5, True)
    assert out.read_bytes() == payload
    with pytest.raises(DataUnavailableError, match="checksum mismatch"):
        data._download("g-idx2-ubyte", [url + "bad.gz"], tmp_path / "cache2", md5, True)
    assert not (tmp_path / "cache2" / "g-idx2-ubyte").exists(), "a file that fails its check must be removed"


def test_load_mnist_downloads_missing_files_when_online(fake_mnist, local_mirror, monkeypatch):
    www, url = local_mirror
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (fake_mnist["root"] / "mnist" / f"{name}.gz").rename(www / f"{name}.gz")
    monkeypatch.setattr(data, "MNIST_MIRRORS", ("http://127.0.0.1:9/", url))  # first mirror refuses
    monkeypatch.delenv("COMPANION_OFFLINE")
    x, y = load_mnist("test", as_tensor=False, normalize=False)
    np.testing.assert_array_equal(x, fake_mnist["images"])
    assert (fake_mnist["root"] / "mnist" / "t10k-images-idx3-ubyte").exists()


@pytest.mark.skipif(not (SHARED_DATA / "mnist").exists(), reason="the offline copy of the MNIST test split is absent")
def test_official_test_split_matches_its_published_checksum(monkeypatch):
    monkeypatch.setenv("COMPANION_DATA", str(SHARED_DATA))
    monkeypatch.setenv("COMPANION_OFFLINE", "1")
    monkeypatch.delenv("COMPANION_MNIST_FALLBACK", raising=False)
    x, y = load_mnist("test", as_tensor=False, normalize=False)
    assert x.shape == (10_000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist()[:3] == [980, 1135, 1032]  # the well-known class counts


def test_train_val_split_is_90_10_and_contiguous():
    text = "abcdefghij" * 10
    train, val = train_val_split(text)
    assert len(train) == 90 and train + val == text
    with pytest.raises(ValueError, match="train_fraction"):
        train_val_split(text, 1.5)


@pytest.mark.skipif(not (SHARED_DATA / "tinyshakespeare").exists(), reason="offline tiny-shakespeare is absent")
def test_tiny_shakespeare_loads_and_tokenizes(monkeypatch):
    monkeypatch.setenv("COMPANION_DATA", str(SHARED_DATA))
    monkeypatch.setenv("COMPANION_OFFLINE", "1")
    text = data.load_shakespeare()
    assert len(text) == 1_115_394
    tok = CharTokenizer(text)
    assert tok.vocab_size == 65
    assert tok.decode(tok.encode(text[:1000])) == text[:1000]


@given(st.text(alphabet="abc xyz\n!", min_size=1, max_size=200))
def test_tokenizer_decode_inverts_encode(s):
    tok = CharTokenizer("abc xyz\n!")
    assert tok.decode(tok.encode(s)) == s


def test_tokenizer_rejects_unknown_characters_and_ids():
    tok = CharTokenizer("ab")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("abc")
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        tok.decode([0, 5])
