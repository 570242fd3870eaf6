r"""Human evaluation of a generator: the two-alternative forced choice (chapter "MNIST end to end").

Seed `003` §9.4 lists human evaluation (人工评估) among the ways to judge a generative model. The
simplest protocol that yields a number with an error bar is the **two-alternative forced choice**
(2AFC, 二选一迫选): a judge sees a real image and a generated one side by side, in random order, and
must say which is real. If the generator were perfect the judge could only guess, so the number of
correct answers :math:`k` out of :math:`n` would be :math:`\text{Binomial}(n, 1/2)`; a judge who is
right with probability :math:`p > 1/2` has found a difference.

The statistics of :math:`n` judgements:

* the accuracy :math:`\hat p = k / n` with the **Wilson score interval** (:func:`wilson_interval`)

  .. math::

      \frac{\hat p + \frac{z^2}{2n} \pm z \sqrt{\frac{\hat p (1 - \hat p)}{n} + \frac{z^2}{4 n^2}}}{1 + \frac{z^2}{n}},

  which, unlike :math:`\hat p \pm z \sqrt{\hat p (1 - \hat p) / n}`, stays inside :math:`[0, 1]` and
  behaves at :math:`k = 0` or :math:`k = n`;
* the exact two-sided **binomial test** of :math:`p = 1/2` (:func:`binomial_test`): the probability,
  under guessing, of an outcome no more likely than the one observed;
* how many judgements are needed to detect a given accuracy (:func:`judgements_needed`): the
  smallest :math:`n` for which the exact test at level :math:`\alpha` rejects guessing with
  probability at least the requested power when the true accuracy is :math:`p`.

:class:`TwoAFC` holds a session (pairs, sides, answers) and :func:`two_afc_widget` shows it in
JupyterLab with two buttons (ipywidgets).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from companion.checks import verdict

__all__ = ["binomial_test", "wilson_interval", "judgements_needed", "TwoAFC", "two_afc_widget",
           "check_binomial_test"]


def _check_counts(k: int, n: int) -> None:
    for name, v in (("k", k), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1 (k correct answers out of n), got k={k}, n={n}")


def binomial_test(k: int, n: int, p: float = 0.5) -> float:
    r"""Exact two-sided p-value of ``k`` successes in ``n`` trials under :math:`\text{Binomial}(n, p)`.

    The sum of :math:`P(K = j)` over every :math:`j` with :math:`P(K = j) \le P(K = k)` (with a relative
    tolerance of 1e-7, as scipy's ``binomtest`` does), capped at 1.
    """
    _check_counts(k, n)
    if not 0 < p < 1:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    log_pmf = _log_pmf(n, p)
    threshold = log_pmf[k] + math.log1p(1e-7)
    return min(1.0, sum(math.exp(v) for v in log_pmf if v <= threshold))


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` for a proportion ``k / n`` (``z = 1.96``: 95%)."""
    _check_counts(k, n)
    if not z > 0:
        raise ValueError(f"z must be > 0, got {z}")
    p_hat = k / n
    denom = 1 + z * z / n
    centre = (p_hat + z * z / (2 * n)) / denom
    half = z * math.sqrt(p_hat * (1 - p_hat) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _log_pmf(n: int, p: float) -> list[float]:
    """log P(K = j), j = 0..n, for K ~ Binomial(n, p) (log space: no overflow for large n)."""
    return [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * math.log(p)
            + (n - j) * math.log1p(-p) for j in range(n + 1)]


def _power(n: int, p: float, alpha: float) -> float:
    """P(the exact test rejects 1/2 at level alpha) when each answer is right with probability p.

    Under 1/2 the distribution is symmetric, so the two-sided p-value of j is
    min(1, 2 P(K <= min(j, n - j))): one cumulative sum gives every j's (O(n), not O(n^2)).
    """
    cdf, total = [], 0.0
    for v in _log_pmf(n, 0.5):
        total += math.exp(v)
        cdf.append(total)
    pmf = _log_pmf(n, p)
    reject = (j for j in range(n + 1) if 2 * j != n and min(1.0, 2 * cdf[min(j, n - j)]) <= alpha)
    return sum(math.exp(pmf[j]) for j in reject)


def judgements_needed(p: float, alpha: float = 0.05, power: float = 0.8, max_n: int = 2000) -> int:
    """The smallest ``n`` at which the exact two-sided test detects a judge of accuracy ``p`` with ``power``.

    ``max_n`` bounds the search (a :class:`ValueError` names it when even ``max_n`` is not enough).
    """
    if not 0.5 < p < 1:
        raise ValueError(f"p must lie in (0.5, 1): a judge right more often than chance, got {p}")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must lie in (0, 1), got alpha={alpha}, power={power}")
    for n in range(1, max_n + 1):
        if _power(n, p, alpha) >= power:
            return n
    raise ValueError(f"more than max_n = {max_n} judgements are needed for p = {p}; raise max_n")


class TwoAFC:
    """A 2AFC session: ``n`` pairs (one real, one generated image), each shown with the real one on a random side.

    Args:
        real, fake: ``(N, ...)`` images; pair ``i`` is ``real[i]`` with ``fake[i]``.
        n: pairs in the session (default: all ``N``).
        generator: seeds the sides.

    ``pair(i) -> (left, right)``; ``answer(i, side)`` records the judge's choice ("left" or "right" is
    real) and returns whether it was right; ``summary()`` gives the statistics of the answers so far.
    """

    def __init__(self, real: Tensor, fake: Tensor, n: int | None = None, generator: torch.Generator | None = None):
        if real.shape != fake.shape or real.ndim < 1:
            raise ValueError(f"real and fake must have the same shape (N, ...), got {tuple(real.shape)} and "
                             f"{tuple(fake.shape)}")
        n = real.shape[0] if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= real.shape[0]:
            raise ValueError(f"n must be an int in [1, {real.shape[0]}] (the pairs available), got {n!r}")
        self.real, self.fake, self.n = real[:n], fake[:n], n
        self.real_on_left = (torch.rand(n, generator=generator) < 0.5).tolist()
        self.answers: dict[int, bool] = {}

    def _check_index(self, i: int) -> None:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.n:
            raise IndexError(f"pair index must be an int in [0, {self.n - 1}], got {i!r}")

    def pair(self, i: int) -> tuple[Tensor, Tensor]:
        """The two images of pair ``i`` as shown: ``(left, right)``."""
        self._check_index(i)
        return (self.real[i], self.fake[i]) if self.real_on_left[i] else (self.fake[i], self.real[i])

    def answer(self, i: int, side: str) -> bool:
        """Record that the judge called ``side`` ("left" or "right") the real image of pair ``i``; True if right."""
        self._check_index(i)
        if side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        self.answers[i] = (side == "left") == self.real_on_left[i]
        return self.answers[i]

    def summary(self) -> dict:
        """``{"n", "correct", "accuracy", "ci_low", "ci_high", "p_value"}`` of the answers so far (n >= 1)."""
        n, k = len(self.answers), sum(self.answers.values())
        if n == 0:
            raise ValueError("no answers yet: call answer(i, side) first")
        low, high = wilson_interval(k, n)
        return {"n": n, "correct": k, "accuracy": k / n, "ci_low": low, "ci_high": high,
                "p_value": binomial_test(k, n)}


def two_afc_widget(session: TwoAFC, scale: int = 4):
    """An ipywidgets box that shows the session's pairs one by one with "left is real" / "right is real" buttons.

    Images are ``(1, H, W)`` or ``(H, W)`` in ``[0, 1]``, drawn ``scale`` times larger. After the last pair
    the box shows ``session.summary()``. Interactive in JupyterLab; a static page shows the first pair.
    """
    import io

    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    def png(left: Tensor, right: Tensor) -> bytes:
        fig, axes = plt.subplots(1, 2, figsize=(0.3 * scale * 2, 0.3 * scale))
        for ax, img in zip(axes, (left, right), strict=True):
            ax.imshow(img.squeeze().clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.axis("off")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        plt.close(fig)
        return buf.getvalue()

    state = {"i": 0}
    image = widgets.Image(value=png(*session.pair(0)), format="png")
    status = widgets.Label(value=f"pair 1 of {session.n}: which image is real?")
    buttons = [widgets.Button(description=f"{side} is real") for side in ("left", "right")]

    def on_click(side: str):
        def handler(_):
            i = state["i"]
            if i >= session.n:
                return
            session.answer(i, side)
            state["i"] = i + 1
            if state["i"] < session.n:
                image.value = png(*session.pair(state["i"]))
                status.value = f"pair {state['i'] + 1} of {session.n}: which image is real?"
            else:
                s = session.summary()
                status.value = (f"done: {s['correct']} of {s['n']} right ({s['accuracy']:.0%}, 95% CI "
                                f"{s['ci_low']:.0%}-{s['ci_high']:.0%}), p = {s['p_value']:.3g} against guessing")
        return handler

    for side, button in zip(("left", "right"), buttons, strict=True):
        button.on_click(on_click(side))
    return widgets.VBox([image, widgets.HBox(buttons), status])


def check_binomial_test(fn) -> bool:
    """Exercise checker (notebook ``06_1``): ``fn(k, n)``, the exact two-sided p-value of ``k`` right answers
    out of ``n`` under guessing, against :func:`binomial_test` on cases where the two tails differ."""
    cases = [(8, 10), (5, 10), (0, 7), (12, 20), (31, 50), (44, 100)]
    for k, n in cases:
        try:
            got = float(fn(k, n))
        except Exception as exc:  # noqa: BLE001 - report any failure of the reader's code
            return verdict(False, f"fn({k}, {n}) raised {type(exc).__name__}: {exc}")
        want = binomial_test(k, n)
        if not math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12):
            hint = " (a one-sided tail is half of it)" if math.isclose(2 * got, want, rel_tol=1e-6) else ""
            return verdict(False, f"fn({k}, {n}) = {got:.6g}, expected {want:.6g}{hint}")
    return verdict(True, f"the exact two-sided p-value on {len(cases)} cases")
