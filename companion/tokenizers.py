r"""Byte-level byte-pair encoding (BPE), the tokenizer of GPT-2 and its successors (for the language-model chapters).

BPE (Gage 1994, for compression; Sennrich, Haddow and Birch 2016, for subwords) builds a
vocabulary by repeatedly gluing together the most frequent adjacent pair of tokens. GPT-2
:cite:`radford2019language` runs it on *bytes*: the base vocabulary is the 256 byte values,
so every Unicode string (as its UTF-8 bytes) can be encoded and nothing is ever unknown.

Training (:func:`train_bpe`)
----------------------------
1. Split the text at the special tokens (they never take part in a merge), then into
   *pre-tokens* with :data:`GPT2_SPLIT_PATTERN` (words with their leading space, numbers,
   punctuation, whitespace), so that no merge crosses a word boundary.
2. Start every pre-token as its sequence of bytes; count each adjacent pair of tokens
   :math:`(a, b)` over all pre-tokens, weighted by how often the pre-token occurs:

   .. math::

       c(a, b) = \sum_{w} n(w) \, \#\{i : (w_i, w_{i+1}) = (a, b)\}.

3. Take the most frequent pair :math:`(a, b)^\star = \arg\max c(a, b)` (on a tie, the pair
   with the smallest ids ``(a, b)``), give it the next id :math:`256 + r`, where :math:`r` is
   its *rank* (0 for the first merge), and replace it everywhere, left to right. Only the
   pre-tokens that contain the pair are recounted, so a step costs what it changes.
4. Repeat until the vocabulary has ``vocab_size`` tokens (or no pair is left).

Encoding (:meth:`BPETokenizer.encode`)
--------------------------------------
Split the text as in training; in each pre-token, start from its bytes and apply the merges
*in rank order*: repeatedly merge the adjacent pair of lowest rank, until no adjacent pair
has been learned. This reproduces on new text the segmentation that training made of the
training text; the most frequent pair *of the new text* plays no part. Decoding
concatenates the tokens' bytes and decodes them as UTF-8.

Token ids: ``0..255`` the bytes, ``256..256+M-1`` the ``M`` merges (id ``256 + r`` for rank
``r``), then the special tokens, as in GPT-2, whose ``<|endoftext|>`` is its last id.
"""

from __future__ import annotations

import heapq
import json
import numbers
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path

__all__ = ["GPT2_SPLIT_PATTERN", "BPETokenizer", "train_bpe", "pre_tokenize", "merge_pair"]

# GPT-2's pre-tokenizer, 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+,
# written for Python's `re`, which has no \p{..} classes: a letter is [^\W\d_] (a word character
# that is neither a decimal digit nor "_"), a number is \d, and "other" is neither space nor letter
# nor digit. The split is GPT-2's except that numerals which are not decimal digits (², ½, Ⅻ:
# Unicode categories Nl and No) go with the letters, and the separators \x1c-\x1f count as space.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""

FORMAT = "companion.tokenizers.BPETokenizer"
_CACHE_SIZE = 100_000  # pre-tokens remembered by encode (then the cache starts afresh)


def _check_text(text, what: str = "text") -> None:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}")


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate such as "\ud800" has no UTF-8 bytes
        raise ValueError(f"text has no UTF-8 encoding: {text[exc.start:exc.end]!r} at position {exc.start} "
                         "is a lone surrogate") from None


def _compile(split_pattern: str | None) -> re.Pattern | None:
    if split_pattern is None:
        return None
    if not isinstance(split_pattern, str):
        raise TypeError(f"split_pattern must be a regular expression (str) or None, "
                        f"got {type(split_pattern).__name__}")
    try:
        return re.compile(split_pattern)
    except re.error as exc:
        raise ValueError(f"split_pattern {split_pattern!r} is not a valid regular expression: {exc}") from None


def pre_tokenize(text: str, split_pattern: str | None = GPT2_SPLIT_PATTERN) -> list[str]:
    """Split ``text`` into the pieces that BPE merges within: ``"Hello, world"`` -> ``["Hello", ",", " world"]``.

    Args:
        text: the text.
        split_pattern: a regular expression whose matches, in order, must cover ``text``
            exactly (GPT-2's by default); ``None`` keeps ``text`` whole.

    Returns:
        The non-empty pieces; ``"".join(pieces) == text``.
    """
    _check_text(text)
    pattern = _compile(split_pattern)
    return _split(text, pattern)


def _split(text: str, pattern: re.Pattern | None) -> list[str]:
    if pattern is None:
        return [text] if text else []
    matches = pattern.findall(text) if not pattern.groups else [m.group() for m in pattern.finditer(text)]
    pieces = [p for p in matches if p]
    if sum(map(len, pieces)) != len(text):  # a gap would silently drop characters: find the first
        at = 0
        for m in pattern.finditer(text):
            if m.start() != at:
                break
            at = m.end()
        raise ValueError(f"split_pattern {pattern.pattern!r} must match every character of the text, "
                         f"but skips {text[at]!r} at position {at}")
    return pieces


def merge_pair(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, left to right, without overlaps.

    ``merge_pair([97, 97, 97], (97, 97), 256) == [256, 97]``.
    """
    a, b = pair
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _check_specials(special_tokens) -> list[str]:
    if isinstance(special_tokens, str):
        raise TypeError(f"special_tokens must be a sequence of strings, got the single string {special_tokens!r}; "
                        f"write ({special_tokens!r},)")
    specials = list(special_tokens)
    for s in specials:
        if not isinstance(s, str) or not s:
            raise ValueError(f"each special token must be a non-empty str, got {s!r}")
    repeated = sorted({s for s in specials if specials.count(s) > 1})
    if repeated:
        raise ValueError(f"special tokens must be distinct, got {repeated} more than once")
    return specials


def _special_splitter(specials: Sequence[str]) -> re.Pattern | None:
    if not specials:
        return None
    alternatives = sorted(specials, key=len, reverse=True)  # the longest special wins where two overlap
    return re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")


class BPETokenizer:
    """A byte-level BPE tokenizer: ``encode(str) -> list[int]`` and ``decode(list[int]) -> str``.

    Build one with :func:`train_bpe`, or from a list of merges (as :meth:`load` does).

    Args:
        merges: the learned pairs in rank order; ``merges[r] = (a, b)`` makes token ``256 + r``
            from tokens ``a`` and ``b``, both below ``256 + r``.
        special_tokens: strings encoded as one id each (``"<|endoftext|>"``), ids after the merges;
            encoding finds them in any text.
        split_pattern: the pre-tokenizer's regular expression (see :func:`pre_tokenize`), or ``None``.

    Attributes:
        merges: ``list[tuple[int, int]]``, the rank of a merge is its index.
        ranks: ``dict[tuple[int, int], int]``, each merge's rank.
        special_tokens: ``dict[str, int]``, each special token's id.
        vocab: ``list[bytes]``, the bytes of each token id (a special token's are its UTF-8).
        vocab_size: ``256 + len(merges) + len(special_tokens)``.
    """

    def __init__(self, merges: Iterable[tuple[int, int]] = (), special_tokens: Sequence[str] = (),
                 split_pattern: str | None = GPT2_SPLIT_PATTERN):
        self.merges: list[tuple[int, int]] = []
        self.vocab: list[bytes] = [bytes([i]) for i in range(256)]
        for rank, pair in enumerate(merges):
            ok = (isinstance(pair, Sequence) and len(pair) == 2
                  and all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in pair))
            if not ok:
                raise ValueError(f"merge {rank} must be a pair of token ids (a, b), got {pair!r}")
            a, b = int(pair[0]), int(pair[1])
            if not (0 <= a < 256 + rank and 0 <= b < 256 + rank):
                raise ValueError(f"merge {rank} is {(a, b)}, but at rank {rank} the ids run from 0 to {255 + rank}")
            self.merges.append((a, b))
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self.ranks: dict[tuple[int, int], int] = {pair: r for r, pair in enumerate(self.merges)}
        specials = _check_specials(special_tokens)
        self.special_tokens: dict[str, int] = {s: len(self.vocab) + i for i, s in enumerate(specials)}
        self.vocab += [s.encode("utf-8") for s in specials]
        self.split_pattern = split_pattern
        self._pattern = _compile(split_pattern)
        self._specials = _special_splitter(specials)
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={list(self.special_tokens)})")

    def _encode_piece(self, piece: str) -> list[int]:
        """One pre-token's ids: merge the adjacent pair of lowest rank until none has a rank."""
        ids = self._cache.get(piece)
        if ids is not None:
            return ids
        ids = list(_utf8(piece))
        ranks = self.ranks
        while len(ids) > 1:
            pair = min(pairwise(ids), key=lambda p: ranks.get(p, len(ranks)))
            rank = ranks.get(pair)
            if rank is None:  # no adjacent pair was learned
                break
            ids = merge_pair(ids, pair, 256 + rank)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``: ``(T,)`` ints in ``[0, vocab_size)``, with ``decode(encode(text)) == text``.

        Special tokens in ``text`` become their single id; the text between them is split
        into pre-tokens and each is encoded by applying the merges in rank order.
        """
        _check_text(text)
        chunks = self._specials.split(text) if self._specials else [text]
        ids: list[int] = []
        for i, chunk in enumerate(chunks):
            if i % 2:  # re.split with a group puts the separators (the special tokens) at odd positions
                ids.append(self.special_tokens[chunk])
                continue
            for piece in _split(chunk, self._pattern):
                ids.extend(self._encode_piece(piece))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of token ids ``(T,)`` (a list, or a 1-D integer array or tensor).

        Bytes that are not valid UTF-8 (a sequence cut inside a character) become U+FFFD.
        """
        if isinstance(ids, (str, bytes)):
            raise TypeError(f"ids must be a sequence of token ids (ints), got {type(ids).__name__}")
        out = []
        vocab, n = self.vocab, len(self.vocab)
        for pos, t in enumerate(ids):
            if isinstance(t, bool) or not hasattr(t, "__index__"):
                raise TypeError(f"ids must be ints, got {t!r} ({type(t).__name__}) at position {pos}")
            try:
                i = t.__index__()
            except TypeError:  # e.g. a row of a 2-D tensor
                raise TypeError(f"ids must be a flat sequence of ints, got {type(t).__name__} {t!r} "
                                f"at position {pos}") from None
            if not 0 <= i < n:
                raise ValueError(f"token id {i} at position {pos} is not in the vocabulary (ids 0 to {n - 1})")
            out.append(vocab[i])
        return b"".join(out).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        """The tokenizer as plain JSON-able data (what :meth:`save` writes)."""
        return {"format": FORMAT, "version": 1, "split_pattern": self.split_pattern,
                "merges": [list(p) for p in self.merges], "special_tokens": list(self.special_tokens)}

    def save(self, path: str | Path) -> Path:
        """Write the tokenizer to ``path`` as JSON (merges in rank order, special tokens, pattern)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), allow_nan=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """Read a tokenizer written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{path} is not a saved BPETokenizer: expected format {FORMAT!r}, got {got!r}")
        if data.get("version") != 1:
            raise ValueError(f"{path} has version {data.get('version')!r}; this code reads version 1")
        missing = [k for k in ("split_pattern", "merges", "special_tokens") if k not in data]
        if missing:
            raise ValueError(f"{path} lacks the fields {missing}")
        return cls(data["merges"], data["special_tokens"], data["split_pattern"])


def _pair_counts(word: Sequence[int]) -> Counter:
    return Counter(pairwise(word))


def train_bpe(text: str, vocab_size: int, special_tokens: Sequence[str] = (),
              split_pattern: str | None = GPT2_SPLIT_PATTERN) -> BPETokenizer:
    """Learn a byte-level BPE tokenizer with ``vocab_size`` tokens from ``text``.

    Args:
        text: the training corpus.
        vocab_size: the number of tokens wanted: 256 bytes + the merges + the special tokens,
            so ``vocab_size - 256 - len(special_tokens)`` merges. Training stops early (a smaller
            vocabulary) if no adjacent pair is left.
        special_tokens: strings that get one id each and are cut out of ``text`` before the
            pairs are counted, so that no merge crosses or enters them.
        split_pattern: the pre-tokenizer (see :func:`pre_tokenize`); ``None`` merges across
            the whole text (fine for a few kB; on a large text use a pattern).

    Returns:
        The tokenizer; ``tokenizer.merges`` lists the merges in the order they were learned.
        Equally frequent pairs are merged smallest ids ``(a, b)`` first, so training is
        deterministic.
    """
    _check_text(text)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    specials = _check_specials(special_tokens)
    if vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size must be at least 256 (the bytes) + {len(specials)} special token(s) = "
                         f"{256 + len(specials)}, got {vocab_size}")
    pattern = _compile(split_pattern)
    splitter = _special_splitter(specials)
    chunks = splitter.split(text)[::2] if splitter else [text]  # even positions: the text between specials

    # Each distinct pre-token once, with its number of occurrences n(w).
    pre_tokens = Counter(piece for chunk in chunks for piece in _split(chunk, pattern))
    words = [list(_utf8(w)) for w in pre_tokens]
    counts = list(pre_tokens.values())

    # c(a, b), and for each pair the words that (may) contain it.
    pair_count: Counter = Counter()
    where: dict[tuple[int, int], set[int]] = {}
    for i, word in enumerate(words):
        for pair, k in _pair_counts(word).items():
            pair_count[pair] += k * counts[i]
            where.setdefault(pair, set()).add(i)
    # A max-heap by count (then smallest ids) with lazy deletion: every change of a count pushes
    # a new entry, and a popped entry whose count is no longer current is dropped.
    heap = [(-c, pair) for pair, c in pair_count.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    n_merges = vocab_size - 256 - len(specials)
    while len(merges) < n_merges and heap:
        neg_c, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg_c:  # a stale entry
            continue
        new_id = 256 + len(merges)
        merges.append(pair)
        changed = set()
        for i in where.pop(pair):
            word = words[i]
            if len(word) < 2:
                continue
            merged = merge_pair(word, pair, new_id)
            if len(merged) == len(word):  # the pair left this word in an earlier merge
                continue
            before, after = _pair_counts(word), _pair_counts(merged)
            for p in before.keys() | after.keys():
                delta = after.get(p, 0) - before.get(p, 0)
                if delta:
                    pair_count[p] += delta * counts[i]
                    changed.add(p)
                    if delta > 0:
                        where.setdefault(p, set()).add(i)
            words[i] = merged
        for p in changed:
            c = pair_count[p]
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                del pair_count[p]
    return BPETokenizer(merges, specials, split_pattern)
