"""Tests of companion.human_eval: the 2AFC protocol and its statistics (chapter "MNIST end to end")."""

from __future__ import annotations

import math

import pytest
import torch

from companion.human_eval import (
    TwoAFC,
    binomial_test,
    check_binomial_test,
    judgements_needed,
    two_afc_widget,
    wilson_interval,
)


def test_binomial_test_by_hand_and_against_scipy():
    # 8 of 10: P(K >= 8) + P(K <= 2) = 2 (45 + 10 + 1) / 1024
    assert binomial_test(8, 10) == pytest.approx(112 / 1024, rel=1e-12)
    assert binomial_test(5, 10) == pytest.approx(1.0) and binomial_test(0, 5) == pytest.approx(2 / 32, rel=1e-12)
    stats = pytest.importorskip("scipy.stats")
    for k, n, p in [(3, 17, 0.5), (60, 100, 0.5), (7, 9, 0.3), (0, 40, 0.5), (31, 50, 0.5)]:
        assert binomial_test(k, n, p) == pytest.approx(stats.binomtest(k, n, p).pvalue, rel=1e-9)


def test_wilson_interval_matches_its_formula_and_stays_in_the_unit_interval():
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # the textbook example
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 10)[1] > 0 and wilson_interval(10, 10)[0] < 1  # not degenerate at the edges
    # narrower with more judgements at the same accuracy
    assert (lambda a, b: a[1] - a[0] > b[1] - b[0])(wilson_interval(6, 10), wilson_interval(60, 100))


def test_judgements_needed_is_the_smallest_n_with_the_power():
    stats = pytest.importorskip("scipy.stats")

    def power(n, p):
        return sum(stats.binom.pmf(j, n, p) for j in range(n + 1) if stats.binomtest(j, n).pvalue <= 0.05)

    n = judgements_needed(0.75)
    assert power(n, 0.75) >= 0.8 and all(power(m, 0.75) < 0.8 for m in range(1, n))
    # a subtler difference needs many more judgements
    assert judgements_needed(0.6) > 4 * n
    with pytest.raises(ValueError, match=r"p must lie in \(0.5, 1\)"):
        judgements_needed(0.5)
    with pytest.raises(ValueError, match="raise max_n"):
        judgements_needed(0.51, max_n=50)


def test_power_agrees_with_the_binomial_test_and_stays_finite_for_many_judgements():
    from companion.human_eval import _power

    def brute_force(n, p):  # the definition: P(reject) summed over the outcomes the exact test rejects
        return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(n + 1) if binomial_test(j, n) <= 0.05)

    for n in (1, 2, 7, 10, 25, 40, 61):
        for p in (0.55, 0.75, 0.9):
            assert _power(n, p, 0.05) == pytest.approx(brute_force(n, p), rel=1e-9, abs=1e-15)
    # a judge barely better than chance: thousands of judgements, where math.comb * p**j overflowed
    n = judgements_needed(0.53, max_n=5000)
    assert 1500 < n < 3000
    assert _power(n, 0.53, 0.05) >= 0.8 > _power(n - 1, 0.53, 0.05)


def test_a_session_scores_a_perfect_judge_and_a_judge_who_always_says_left():
    real, fake = torch.ones(40, 1, 4, 4), torch.zeros(40, 1, 4, 4)
    s = TwoAFC(real, fake, generator=torch.Generator().manual_seed(0))
    lefts = sum(s.real_on_left)
    assert 10 < lefts < 30  # random sides
    for i in range(s.n):
        left, _ = s.pair(i)
        assert s.answer(i, "left" if bool(left.mean() == 1) else "right")
    assert s.summary() == {"n": 40, "correct": 40, "accuracy": 1.0, "ci_low": pytest.approx(wilson_interval(40, 40)[0]),
                           "ci_high": 1.0, "p_value": pytest.approx(2 * 0.5**40)}
    t = TwoAFC(real, fake, n=40, generator=torch.Generator().manual_seed(0))
    for i in range(t.n):
        t.answer(i, "left")
    assert t.summary()["correct"] == lefts and math.isclose(t.summary()["p_value"], binomial_test(lefts, 40))


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="same shape"):
        TwoAFC(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"n must be an int in \[1, 3\]"):
        TwoAFC(torch.zeros(3, 2), torch.zeros(3, 2), n=5)
    s = TwoAFC(torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="no answers yet"):
        s.summary()
    with pytest.raises(ValueError, match="side must be 'left' or 'right'"):
        s.answer(0, "top")
    with pytest.raises(IndexError, match=r"\[0, 2\]"):
        s.pair(3)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        binomial_test(11, 10)


def test_the_widget_records_clicks_and_ends_with_the_summary():
    pytest.importorskip("ipywidgets")
    real, fake = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    s = TwoAFC(real, fake, generator=torch.Generator().manual_seed(1))
    box = two_afc_widget(s)
    left_button = box.children[1].children[0]
    left_button.click()
    left_button.click()
    assert len(s.answers) == 2
    assert box.children[2].value.startswith("done: ")


def test_the_checker_accepts_the_exact_test_and_rejects_one_tail_and_crashes(capsys):
    assert check_binomial_test(binomial_test)
    assert capsys.readouterr().out.startswith("Correct: ")

    def one_tail(k, n):
        return sum(math.comb(n, j) for j in range(max(k, n - k), n + 1)) / 2**n

    assert not check_binomial_test(one_tail)
    assert "one-sided tail" in capsys.readouterr().out
    assert not check_binomial_test(lambda k, n: 1 / 0)
    assert "ZeroDivisionError" in capsys.readouterr().out
