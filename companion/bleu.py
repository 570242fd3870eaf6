r"""Corpus BLEU, the n-gram overlap score of machine translation (chapter "BERT and evaluating generated text").

BLEU :cite:`papineni2002bleu` compares each hypothesis with one or more references through
*clipped* n-gram precisions, pooled over the whole corpus:

.. math::

    p_n = \frac{\sum_{\text{hyp}} \sum_{g \in \text{n-grams(hyp)}} \min\big(c_{\text{hyp}}(g),\,
                \max_{r} c_r(g)\big)}{\sum_{\text{hyp}} \sum_{g} c_{\text{hyp}}(g)},
    \qquad
    \mathrm{BLEU} = \mathrm{BP} \cdot \exp\Big(\sum_{n=1}^{4} \tfrac14 \log p_n\Big),

with the brevity penalty :math:`\mathrm{BP} = \min(1, e^{1 - r/c})`, :math:`c` the total
hypothesis length and :math:`r` the sum over hypotheses of the reference length closest to
each hypothesis's length (the shorter one on a tie). Clipping stops "the the the the" from
scoring; BP stops short, precise hypotheses from scoring. Reported in [0, 100] like
``sacrebleu``, whose tokenizer (``13a``) is reproduced here.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from companion.checks import verdict

__all__ = ["bleu", "bleu_details", "tokenize_13a", "check_brevity_penalty", "check_bleu_gaming"]

_RE_13A = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation and symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period or comma not preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... or not followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # a dash after a digit
]


def tokenize_13a(line: str) -> list[str]:
    """The ``13a`` tokenization of mteval-v13a.pl (WMT), which ``sacrebleu`` uses by default.

    Splits punctuation off words but keeps decimal numbers (``3.14``) and thousands
    (``1,000``) whole.
    """
    line = line.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, repl in _RE_13A:
        line = pattern.sub(repl, line)
    return line.split()


def _ngrams(tokens: list[str], max_order: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1))


def _closest_length(hyp_len: int, ref_lens: list[int]) -> int:
    return min(ref_lens, key=lambda r: (abs(r - hyp_len), r))  # tie -> the shorter reference


def bleu_details(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]], *,
                 max_order: int = 4, tokenize: str = "13a", smooth: str = "none", lowercase: bool = False) -> dict:
    """Corpus BLEU and its parts: the score, the n-gram precisions, BP and the lengths.

    Args and the score are as in :func:`bleu`.

    Returns:
        ``{"score", "precisions" (list, in %), "bp", "hyp_len", "ref_len",
        "matches" (per order), "totals" (per order)}``.
    """
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("hypotheses and references must be lists of strings (one entry per sentence), "
                        "not a single string")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references; "
                         "give one reference (or a list of references) per hypothesis")
    if len(hypotheses) == 0:
        raise ValueError("BLEU of an empty corpus is undefined: give at least one hypothesis")
    if max_order < 1:
        raise ValueError(f"max_order must be >= 1, got {max_order}")
    if tokenize == "13a":
        tok = tokenize_13a
    elif tokenize == "none":
        tok = str.split
    else:
        raise ValueError(f"tokenize must be '13a' or 'none', got {tokenize!r}")
    if smooth not in ("none", "exp"):
        raise ValueError(f"smooth must be 'none' (Papineni et al.) or 'exp' (sacrebleu's default), got {smooth!r}")

    matches, totals = [0] * max_order, [0] * max_order
    hyp_len = ref_len = 0
    for i, (hyp, refs) in enumerate(zip(hypotheses, references, strict=True)):
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs:
            raise ValueError(f"hypothesis {i} has no reference")
        prep = (lambda s: tok(s.lower())) if lowercase else tok
        h = prep(hyp)
        h_counts = _ngrams(h, max_order)
        max_ref_counts: Counter = Counter()
        ref_lens = []
        for r in refs:
            r_tok = prep(r)
            ref_lens.append(len(r_tok))
            for g, c in _ngrams(r_tok, max_order).items():
                max_ref_counts[g] = max(max_ref_counts[g], c)
        hyp_len += len(h)
        ref_len += _closest_length(len(h), ref_lens)
        for g, c in h_counts.items():
            totals[len(g) - 1] += c
            matches[len(g) - 1] += min(c, max_ref_counts[g])  # clipping

    bp = 1.0 if hyp_len >= ref_len else (math.exp(1 - ref_len / hyp_len) if hyp_len > 0 else 0.0)
    precisions = [100.0 * m / t if t else 0.0 for m, t in zip(matches, totals, strict=True)]
    log_sum, zero = 0.0, False
    smooth_factor = 1.0
    for n in range(max_order):
        if totals[n] == 0:  # no n-grams of this order at all: undefined, scored 0
            zero = True
            break
        if matches[n] == 0:
            if smooth == "exp" and any(matches):  # NIST/mteval smoothing: 1 / (2^k * total)
                smooth_factor *= 2
                precisions[n] = 100.0 / (smooth_factor * totals[n])
            else:
                zero = True
                break
        log_sum += math.log(precisions[n] / 100.0)
    score = 0.0 if zero else 100.0 * bp * math.exp(log_sum / max_order)
    return {"score": score, "precisions": precisions, "bp": bp, "hyp_len": hyp_len, "ref_len": ref_len,
            "matches": matches, "totals": totals}


def bleu(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]], *, max_order: int = 4,
         tokenize: str = "13a", smooth: str = "none", lowercase: bool = False) -> float:
    """Corpus BLEU-4 with brevity penalty (Papineni et al. 2002), a score in [0, 100].

    Args:
        hypotheses: the generated sentences, one string each.
        references: for each hypothesis, its reference string or a list of references.
            (``sacrebleu.corpus_bleu`` takes the transpose: a list of reference *streams*.)
        max_order: the largest n-gram order N (4 for BLEU-4).
        tokenize: ``"13a"`` (sacrebleu's default, splits punctuation) or ``"none"``
            (split on whitespace only).
        smooth: ``"none"``: Papineni et al., a zero precision makes BLEU 0;
            ``"exp"``: sacrebleu's default, a zero precision counts as 1/(2^k total).
        lowercase: compare case-insensitively.

    Returns:
        The score; equals ``sacrebleu.corpus_bleu(hypotheses, streams,
        smooth_method=smooth, tokenize=tokenize).score``.
    """
    return bleu_details(hypotheses, references, max_order=max_order, tokenize=tokenize,
                        smooth=smooth, lowercase=lowercase)["score"]


def check_brevity_penalty(answer: float, hyp_len: int, ref_len: int) -> bool:
    """Exercise checker: is ``answer`` BLEU's brevity penalty for corpus lengths c, r? Prints a verdict."""
    expected = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
    ok = math.isclose(answer, expected, rel_tol=1e-6)
    rule = "c >= r, no penalty" if hyp_len >= ref_len else f"exp(1 - {ref_len}/{hyp_len})"
    return verdict(ok, f"BP = {rule} = {expected:.6f}" + ("" if ok else f"; you gave {answer:.6f}"))


def check_bleu_gaming(false_statement: str, paraphrase: str, reference: str = "the cat sat on the mat") -> bool:
    """Exercise checker: a six-word hypothesis that scores above 40 BLEU against ``reference`` and a
    six-word one that scores 0 (both scored by :func:`bleu`, no smoothing).

    Whether the first is false and the second a correct paraphrase is for the reader to judge: a
    measure of overlap cannot tell, which is the point of the exercise.
    """
    if not isinstance(false_statement, str) or not isinstance(paraphrase, str):
        raise TypeError("pass the two hypotheses as strings")
    wrong = []
    for name, hyp in (("the false statement", false_statement), ("the paraphrase", paraphrase)):
        if len(hyp.split()) != 6:
            wrong.append(f"{name} has {len(hyp.split())} words, not 6")
    if tokenize_13a(false_statement) == tokenize_13a(reference):
        wrong.append("the false statement is the reference itself, which is true")
    high, zero = bleu([false_statement], [reference]), bleu([paraphrase], [reference])
    if high <= 40:
        wrong.append(f"the false statement scores {high:.1f}, not above 40 (keep the long n-grams)")
    if zero != 0:
        wrong.append(f"the paraphrase scores {zero:.1f}, not 0 (no 4-gram may match)")
    return verdict(not wrong, "; ".join(wrong) if wrong else
                   f"BLEU {high:.1f} for the false statement and {zero:.1f} for the paraphrase")
