"""companion.tokenizers: byte-level BPE by hand, against the naive definition, Hugging Face and tiny-shakespeare."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import unicodedata
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.tokenizers import GPT2_SPLIT_PATTERN, BPETokenizer, merge_pair, pre_tokenize, train_bpe

EOT = "<|endoftext|>"
WORDS = ("the and to of I you my that in is not with me it for be his your this but he have thou "
         "thee what so him will all do no shall by are our lord good now king love sir come").split()
EXTRA = ["naïve", "café", "Straße", "東京", "🙂", "3.14", "don't", "1,000", "—", "\t", "  "]


def synthetic_corpus(n_words: int = 3000, seed: int = 0) -> str:
    """Seeded words with Zipf-like frequencies, punctuation, newlines and some non-ASCII: many ties."""
    rng = random.Random(seed)
    vocab = WORDS + EXTRA
    weights = [1 / (k + 1) for k in range(len(vocab))]
    out = []
    for _ in range(n_words):
        out.append(rng.choices(vocab, weights)[0])
        out.append(rng.choice([" ", " ", " ", " ", ", ", ".\n", "! ", "? ", "; "]))
    return "".join(out)


@pytest.fixture(scope="module")
def corpus():
    return synthetic_corpus()


@pytest.fixture(scope="module")
def tok(corpus):
    return train_bpe(corpus, 256 + 120 + 1, special_tokens=(EOT,))


def naive_bpe(text: str, n_merges: int, tie_key=lambda pair: pair) -> list[tuple[bytes, bytes]]:
    """BPE as the definition says: recount every pair of every pre-token before each merge.

    Ties go to the smallest ``tie_key(pair)``. Returns the merges as pairs of byte strings.
    """
    words = {w: list(w.encode()) for w in set(pre_tokenize(text))}
    n = Counter(pre_tokenize(text))
    vocab = [bytes([i]) for i in range(256)]
    merges = []
    for r in range(n_merges):
        c = Counter()
        for w, ids in words.items():
            for pair in pairwise(ids):
                c[pair] += n[w]
        if not c:
            break
        best = min(c, key=lambda p: (-c[p], tie_key(p)))
        words = {w: merge_pair(ids, best, 256 + r) for w, ids in words.items()}
        merges.append((vocab[best[0]], vocab[best[1]]))
        vocab.append(vocab[best[0]] + vocab[best[1]])
    return merges


def as_bytes(tok: BPETokenizer) -> list[tuple[bytes, bytes]]:
    return [(tok.vocab[a], tok.vocab[b]) for a, b in tok.merges]


def encode_by_rank(tok: BPETokenizer, text: str) -> list[int]:
    """The slow definition of encoding: apply every merge, rank 0 first, to each pre-token."""
    ids = []
    for piece in pre_tokenize(text):
        seq = list(piece.encode())
        for r, pair in enumerate(tok.merges):
            seq = merge_pair(seq, pair, 256 + r)
        ids += seq
    return ids


# --- the algorithm, by hand ------------------------------------------------------------------

def test_wikipedia_example_aaabdaaabac():
    # Counts: aa 4, ab 2, ... -> Z = aa; then "Z a b d Z a b a c": ab 2 and Za 2 tie, smallest ids (a, b) win
    # -> Y = ab; then ZY 2 -> X = ZY = "aaab"; every pair left occurs once. Encoded: X d X a c.
    tok = train_bpe("aaabdaaabac", 259)
    a, b, c, d = b"abcd"
    assert tok.merges == [(a, a), (a, b), (256, 257)]
    assert tok.vocab[256:] == [b"aa", b"ab", b"aaab"]
    assert tok.encode("aaabdaaabac") == [258, d, 258, a, c]


def test_merges_are_applied_in_rank_order_not_by_frequency_in_the_input():
    # "bcbcbcabab": bc 3 -> 256; then (a, b) 2 and (256, 256) 2 tie, smallest ids (97, 98) -> 257.
    tok = train_bpe("bcbcbcabab", 258)
    a, b, c = b"abc"
    assert tok.merges == [(b, c), (a, b)]
    # In "abababc" the pair ab is the most frequent, but bc has the lower rank, so it merges first.
    assert tok.encode("abababc") == [257, 257, a, 256]
    assert tok.encode("abc") == [a, 256]
    # The same merges in the other order give another encoding.
    assert BPETokenizer([(a, b), (b, c)]).encode("abababc") == [256, 256, 256, c]


def test_merge_pair_replaces_left_to_right_without_overlap():
    assert merge_pair([97, 97, 97], (97, 97), 256) == [256, 97]
    assert merge_pair([97, 97, 97, 97], (97, 97), 256) == [256, 256]
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert merge_pair([], (1, 2), 9) == []


def test_pre_tokenize_splits_words_numbers_punctuation_and_space():
    assert pre_tokenize("Hello, world! It's 2024   ok\n\n") == [
        "Hello", ",", " world", "!", " It", "'s", " 2024", "  ", " ok", "\n\n"]
    assert pre_tokenize("a b", split_pattern=None) == ["a b"]
    assert pre_tokenize("ab, c", split_pattern=r"(\w+)|(\W)") == ["ab", ",", " ", "c"]  # groups don't matter
    assert pre_tokenize("") == []


@given(st.text())
@settings(max_examples=150, deadline=None)
def test_pre_tokens_join_back_into_the_text(text):
    assert "".join(pre_tokenize(text)) == text


def gpt2_comparable(ch: str) -> bool:
    # where Python's re classes and \p{L}, \p{N}, \s differ (see GPT2_SPLIT_PATTERN)
    return unicodedata.category(ch) not in ("Nl", "No") and not "\x1c" <= ch <= "\x1f"


# Unassigned code points (Cn) are left out: the regex module may know a newer Unicode than Python.
@given(st.text(st.characters(exclude_categories=("Cs", "Cn")).filter(gpt2_comparable)))
@settings(max_examples=150, deadline=None)
def test_pre_tokenize_equals_gpt2_regex_split(text):
    regex = pytest.importorskip("regex")
    gpt2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    assert pre_tokenize(text) == regex.findall(gpt2, text)


# --- round trip and encoding ------------------------------------------------------------------

@given(st.lists(st.one_of(st.text(), st.just(EOT)), max_size=5).map("".join))
@settings(max_examples=300, deadline=None)
def test_decode_encode_is_the_identity_on_any_text(tok, text):
    ids = tok.encode(text)
    assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


@pytest.mark.parametrize("text", ["", " ", "\n", "é", "🙂🙂🙂", "👩‍👩‍👧", "e\u0301", "\x00\x7f", "東京 naïve café",
                                  EOT, EOT + EOT, "<|endoftext", "a<|endoftext|>b"])
def test_round_trip_edge_cases(tok, text):
    assert tok.decode(tok.encode(text)) == text


@given(st.text(st.sampled_from(sorted(set(synthetic_corpus(300))) + ["é", "z"]), max_size=60))
@settings(max_examples=200, deadline=None)
def test_encode_equals_applying_every_merge_in_rank_order(tok, text):
    assert tok.encode(text) == encode_by_rank(tok, text)


def test_special_tokens_are_one_id_and_never_merged_across():
    text = ("ab" + EOT) * 50 + "ab"
    tok = train_bpe(text, 256 + 20 + 1, special_tokens=[EOT])
    eot = tok.special_tokens[EOT]
    assert eot == tok.vocab_size - 1 == 256 + len(tok.merges)
    assert tok.merges == [(97, 98)]  # the only pair outside the special tokens
    assert tok.encode("ab" + EOT + "ab") == [256, eot, 256]
    assert tok.decode([eot]) == EOT
    # without declaring it special, its characters are ordinary text and get merged
    plain = train_bpe(text, 256 + 20)
    assert any(b"<|" in t or b"endoftext" in t for t in plain.vocab[256:])


def test_decode_of_a_cut_character_gives_the_replacement_character(tok):
    assert tok.decode(list("é".encode())[:1]) == "\ufffd"


def test_decode_takes_any_flat_sequence_of_ints(tok):
    np = pytest.importorskip("numpy")
    ids = tok.encode("the king")
    assert tok.decode(np.array(ids)) == tok.decode(tuple(ids)) == "the king"


# --- the same as the definition, and as Hugging Face ------------------------------------------

def test_incremental_training_equals_naive_recounting(corpus, tok):
    assert as_bytes(tok) == naive_bpe(corpus, len(tok.merges))


def byte_level_alphabet() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte, which Hugging Face's ByteLevel pre-tokenizer uses."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    others = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + k) for k, b in enumerate(others)}}


@pytest.fixture
def tokenizers(monkeypatch):
    """Hugging Face's ``tokenizers``, on one thread (no pool whose later forks it would warn about)."""
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    return pytest.importorskip("tokenizers")


def hf_train(tokenizers, text: str, vocab_size: int):
    hf = tokenizers.Tokenizer(tokenizers.models.BPE())
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([text], trainer)
    to_byte = {c: b for b, c in byte_level_alphabet().items()}
    merges = json.loads(hf.to_str())["model"]["merges"]
    merges = [m.split(" ") if isinstance(m, str) else m for m in merges]  # "a b" in older versions
    return hf, [(bytes(to_byte[c] for c in a), bytes(to_byte[c] for c in b)) for a, b in merges]


def test_merges_equal_hugging_face_up_to_the_tie_rule(tokenizers, corpus):
    """Hugging Face breaks ties by its own ids, which order the 256 bytes by their stand-in
    character (space ' ' -> 'Ġ' after the letters); this module by byte value. With each tie
    rule, each trainer learns exactly the merges of the naive definition."""
    n = 150
    _, hf_merges = hf_train(tokenizers, corpus, 256 + n)
    mine = as_bytes(train_bpe(corpus, 256 + n))
    assert len(hf_merges) == len(mine) == n
    hf_rank = {b: k for k, (b, _) in enumerate(sorted(byte_level_alphabet().items(), key=lambda bc: bc[1]))}
    hf_order = lambda pair: tuple(hf_rank.get(t, t) for t in pair)  # noqa: E731
    assert hf_merges == naive_bpe(corpus, n, tie_key=hf_order)
    assert mine == naive_bpe(corpus, n)
    first_tie = next((i for i, (p, q) in enumerate(zip(mine, hf_merges, strict=True)) if p != q), n)
    assert 20 <= first_tie < n and mine[:first_tie] == hf_merges[:first_tie]  # 52: then a tie decides


def test_encode_equals_hugging_face_given_the_same_merges(tokenizers, corpus):
    hf, hf_merges = hf_train(tokenizers, corpus, 256 + 150)
    ids_of = {bytes([i]): i for i in range(256)}
    merges = []
    for r, (a, b) in enumerate(hf_merges):
        merges.append((ids_of[a], ids_of[b]))
        ids_of[a + b] = 256 + r
    tok = BPETokenizer(merges)
    text = synthetic_corpus(400, seed=1) + " unseen words: naïveté, ÆSIR, 東京タワー 🙂👍 2718281828 it's"
    to_byte = {c: b for b, c in byte_level_alphabet().items()}
    hf_tokens = [bytes(to_byte[c] for c in t) for t in hf.encode(text).tokens]
    assert [tok.vocab[i] for i in tok.encode(text)] == hf_tokens


# --- tiny-shakespeare ---------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_shakespeare_at_512_tokens_compresses_to_1_94_bytes_per_token(shakespeare_env):
    from companion.data import load_shakespeare

    text = load_shakespeare()
    tok = train_bpe(text, 512)
    ids = tok.encode(text)
    bytes_per_token = len(text.encode()) / len(ids)
    # Hugging Face's byte-level BPE (same vocabulary size and split) gives the same 575,345 tokens.
    assert 1.9 < bytes_per_token < 2.0, bytes_per_token
    assert tok.vocab[256:259] == [b" t", b"he", b" a"]
    assert tok.decode(ids) == text


def test_training_is_deterministic_across_runs_and_hash_seeds(corpus, tok):
    again = train_bpe(corpus, tok.vocab_size, special_tokens=(EOT,))
    assert again.merges == tok.merges
    # another process with another string hash seed (loads the module file alone, without torch)
    module = Path(__file__).resolve().parents[1] / "companion" / "tokenizers.py"
    code = ("import importlib.util, json, sys; s = importlib.util.spec_from_file_location('t', sys.argv[1]); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
            "print(json.dumps(m.train_bpe(sys.stdin.read(), int(sys.argv[2]), ['<|endoftext|>']).merges))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code, str(module), str(tok.vocab_size)], input=corpus,
                             capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        assert [tuple(p) for p in json.loads(out.stdout)] == tok.merges


# --- save and load --------------------------------------------------------------------------

def test_save_and_load_give_the_same_tokenizer(tok, tmp_path):
    path = tok.save(tmp_path / "bpe.json")
    back = BPETokenizer.load(path)
    assert back.merges == tok.merges and back.special_tokens == tok.special_tokens
    assert back.split_pattern == tok.split_pattern == GPT2_SPLIT_PATTERN
    text = "thou art " + EOT + " 東京"
    assert back.encode(text) == tok.encode(text)


def test_load_rejects_files_that_are_not_a_saved_tokenizer(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        BPETokenizer.load(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="expected format"):
        BPETokenizer.load(bad)
    good = BPETokenizer([(97, 98)]).to_dict()
    bad.write_text(json.dumps({**good, "merges": [[97, 98], [300, 97]]}))
    with pytest.raises(ValueError, match=r"merge 1 is \(300, 97\), but at rank 1 the ids run from 0 to 256"):
        BPETokenizer.load(bad)
    bad.write_text(json.dumps({k: v for k, v in good.items() if k != "merges"}))
    with pytest.raises(ValueError, match="lacks the fields"):
        BPETokenizer.load(bad)


# --- bad input ------------------------------------------------------------------------------

def test_bad_input_is_rejected_with_what_was_expected_and_what_came():
    with pytest.raises(ValueError, match=r"at least 256 \(the bytes\) \+ 1 special token\(s\) = 257, got 256"):
        train_bpe("abc", 256, special_tokens=[EOT])
    with pytest.raises(ValueError, match="at least 256.*got 100"):
        train_bpe("abc", 100)
    with pytest.raises(TypeError, match="vocab_size must be an int, got float"):
        train_bpe("abc", 300.0)
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        train_bpe(b"abc", 300)
    with pytest.raises(TypeError, match="single string"):
        train_bpe("abc", 300, special_tokens=EOT)
    with pytest.raises(ValueError, match="distinct"):
        train_bpe("abc", 300, special_tokens=[EOT, EOT])
    with pytest.raises(ValueError, match=r"must match every character of the text, but skips ' ' at position 1"):
        train_bpe("a b", 300, split_pattern=r"\w+")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        train_bpe("a b", 300, split_pattern="(")
    tok = BPETokenizer([(97, 98)], [EOT])
    with pytest.raises(TypeError, match="text must be a str, got list"):
        tok.encode(["ab"])
    with pytest.raises(ValueError, match="lone surrogate"):
        tok.encode("a\ud800")
    with pytest.raises(ValueError, match=r"token id 258 at position 1 is not in the vocabulary \(ids 0 to 257\)"):
        tok.decode([97, 258])
    with pytest.raises(ValueError, match="token id -1"):
        tok.decode([-1])
    with pytest.raises(TypeError, match=r"ids must be ints, got 1.5 \(float\) at position 0"):
        tok.decode([1.5])
    with pytest.raises(TypeError, match="got str"):
        tok.decode("ab")
    with pytest.raises(ValueError, match=r"merge 0 must be a pair of token ids"):
        BPETokenizer([(97,)])


def test_training_stops_early_when_no_pair_is_left():
    tok = train_bpe("ab ab", 1000)
    assert tok.vocab[256:] == [b"ab", b" ab"] and tok.vocab_size == 258  # then no pair is left
