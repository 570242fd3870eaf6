"""companion.bleu.bleu against sacrebleu, and the properties BLEU is built on."""

import math

import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.bleu import bleu, bleu_details, tokenize_13a


def sacre(hyps, refs, smooth="none", tokenize="13a", lowercase=False):
    """sacrebleu's score; refs given per hypothesis (str or list), transposed into streams."""
    refs = [[r] if isinstance(r, str) else list(r) for r in refs]
    n_streams = max(len(r) for r in refs)
    streams = [[r[j] if j < len(r) else None for r in refs] for j in range(n_streams)]
    return sacrebleu.corpus_bleu(hyps, streams, smooth_method=smooth, tokenize=tokenize,
                                 lowercase=lowercase).score


CASES = {
    "identical": (["the cat sat on the mat"], ["the cat sat on the mat"]),
    "partial overlap": (["the cat is on the mat"], ["the cat sat on the mat"]),
    "brevity penalty (short hypothesis)": (["the cat sat on"], ["the cat sat on the mat today"]),
    "longer hypothesis, no penalty": (["the cat sat on the mat and then it slept"], ["the cat sat on the mat"]),
    "zero matches": (["a dog ran"], ["the cat sat on the mat"]),
    "no 4-gram matches": (["the cat sat there quietly on a mat"], ["the cat sat on the mat"]),
    "clipping of repeated words": (["the the the the the the the"], ["the cat is on the mat"]),
    "multiple references": (["the cat is on the mat"], [["there is a cat on the mat", "a cat is on the mat"]]),
    "closest reference length, tie -> shorter": (["a b c d e f"], [["a b c d e", "a b c d e f g"]]),
    "punctuation and numbers (13a)": (['He said: "3.14 is pi, isn\'t it?" (1,000-fold)'],
                                      ['He said: "3.14 is pi, is it not?" (1,000-fold)']),
    "corpus pooling of several sentences": (
        ["It is a guide to action which ensures that the military always obeys the commands of the party.",
         "he read the book because he was interested in world history",
         "to be or not to be"],
        ["It is a guide to action that ensures that the military will forever heed Party commands.",
         "he was interested in world history because he read the book",
         "to be, or not to be: that is the question"]),
    "empty hypothesis": ([""], ["the cat sat on the mat"]),
    "Shakespeare line": (["Thou art more lovely and more temperate"],
                         ["Thou art more lovely and more temperate:"]),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("smooth", ["none", "exp"])
def test_bleu_matches_sacrebleu_within_0_01(name, smooth):
    hyps, refs = CASES[name]
    assert bleu(hyps, refs, smooth=smooth) == pytest.approx(sacre(hyps, refs, smooth), abs=0.01)


def test_bleu_of_identical_text_is_100():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0, abs=1e-9)


def test_zero_matches_give_zero():
    assert bleu(["a dog ran far"], ["the cat sat on the mat"]) == 0.0
    assert sacre(["a dog ran far"], ["the cat sat on the mat"]) == 0.0


def test_brevity_penalty_is_exp_1_minus_r_over_c():
    hyp, ref = ["the cat sat on"], ["the cat sat on the mat today"]
    d = bleu_details(hyp, ref)
    assert (d["hyp_len"], d["ref_len"]) == (4, 7)
    assert d["bp"] == pytest.approx(math.exp(1 - 7 / 4), rel=1e-12)
    # every n-gram of the hypothesis is in the reference: BLEU is the penalty alone
    assert d["score"] == pytest.approx(100 * math.exp(1 - 7 / 4), rel=1e-9)


def test_clipping_caps_counts_at_reference_counts():
    d = bleu_details(["the the the the the the the"], ["the cat is on the mat"])
    assert d["matches"][0] == 2 and d["totals"][0] == 7  # 'the' appears twice in the reference


def test_tokenize_13a_matches_sacrebleu_tokenizer():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    line = 'Hello, world! "Quoted" (1,000.5-fold) &amp; e-mail: a@b.c -- 3-4 end.'
    assert tokenize_13a(line) == Tokenizer13a()(line).split()


@given(
    data=st.lists(
        st.tuples(st.lists(st.sampled_from("a b c d e , .".split()), min_size=0, max_size=12),
                  st.lists(st.sampled_from("a b c d e , .".split()), min_size=1, max_size=12)),
        min_size=1, max_size=5),
    smooth=st.sampled_from(["none", "exp"]),
)
@settings(max_examples=150, deadline=None)
def test_bleu_matches_sacrebleu_on_random_corpora(data, smooth):
    hyps = [" ".join(h) for h, _ in data]
    refs = [" ".join(r) for _, r in data]
    assert bleu(hyps, refs, smooth=smooth) == pytest.approx(sacre(hyps, refs, smooth), abs=0.01)


def test_bleu_score_is_within_0_and_100():
    for hyps, refs in CASES.values():
        assert 0.0 <= bleu(hyps, refs) <= 100.0


def test_bleu_rejects_mismatched_or_bad_input():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="lists of strings"):
        bleu("a b c", "a b c")
    with pytest.raises(ValueError, match="empty corpus"):
        bleu([], [])
    with pytest.raises(ValueError, match="smooth must be"):
        bleu(["a"], ["a"], smooth="add-k")


def test_check_brevity_penalty(capsys):
    from companion.bleu import check_brevity_penalty

    assert check_brevity_penalty(math.exp(1 - 33 / 30), hyp_len=30, ref_len=33)
    assert check_brevity_penalty(1.0, hyp_len=12, ref_len=10)
    assert not check_brevity_penalty(30 / 33, hyp_len=30, ref_len=33)
    assert "Not yet:" in capsys.readouterr().out
