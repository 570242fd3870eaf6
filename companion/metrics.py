r"""Evaluation metrics for generated samples.

Text: corpus BLEU (chapter "BERT and evaluating generated text")
----------------------------------------------------------------
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

__all__ = ["bleu", "bleu_details", "tokenize_13a", "check_brevity_penalty"]

# ----------------------------------------------------------------------------- BLEU

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
    verdict = "Correct" if ok else "Not quite"
    print(f"{verdict}: BP = {rule} = {expected:.6f}" + ("" if ok else f"; you gave {answer:.6f}"))
    return ok


# =============================================================================== images
# Everything below is the image part (chapter "Capstone: MNIST end to end"). It needs torch;
# the BLEU functions above do not.

import math as _math  # noqa: E402
import warnings as _warnings  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

__all__ += [
    "MNISTClassifier",
    "NOT_COMPARABLE_TO_PAPERS",
    "mnist_classifier",
    "classifier_outputs",
    "gaussian_fit",
    "frechet_distance",
    "feature_fid",
    "inception_score",
    "class_histogram",
    "class_coverage",
    "class_kl_to_uniform",
    "label_accuracy",
    "image_metrics",
    "reference_images",
    "real_baseline",
    "iwae_nll",
]

NOT_COMPARABLE_TO_PAPERS = (
    "Feature FID and IS here use a small MNIST classifier trained by this package, not the "
    "Inception-v3 network of the papers: the numbers rank models on MNIST against each other and "
    "against the real-vs-real baseline, and are NOT comparable to published FID/IS values."
)

_IMAGE_METRICS_DOC = r"""

Images: metrics on MNIST features (chapter "Capstone: MNIST end to end")
-------------------------------------------------------------------------

A small CNN classifier :math:`f` trained on MNIST gives, for an image :math:`x`, a feature
vector :math:`\phi(x) \in \mathbb R^{128}` (its penultimate layer) and class probabilities
:math:`p(y \mid x)`. From them:

* **Feature FID** (Fréchet distance, 弗雷歇距离): fit Gaussians :math:`\mathcal N(\mu_1, \Sigma_1)`
  and :math:`\mathcal N(\mu_2, \Sigma_2)` to the features of two image sets; their Fréchet
  (2-Wasserstein) distance is

  .. math::

      d^2 = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{Tr}\big(\Sigma_1 + \Sigma_2
            - 2 (\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2})^{1/2}\big).

  Zero for a set against itself; it grows as the sets drift apart. With finite samples two
  sets from the *same* distribution still score above 0, so every FID is reported next to
  the **real-vs-real baseline** (training images against test images, same sample sizes).
* **Classifier "inception score"** (IS): :math:`\exp\big(\mathbb E_x\, \mathrm{KL}(p(y \mid x)
  \,\|\, p(y))\big)` with :math:`p(y) = \mathbb E_x\, p(y \mid x)`; between 1 and 10 on MNIST,
  high when each sample is confidently one digit *and* the digits are balanced.
* **Class coverage** (类别覆盖): the histogram of predicted digits; the fraction of digits
  that receive at least half their fair share :math:`N/10`; and the KL of the histogram to
  the uniform distribution (0 when balanced). Mode collapse shows here first.
* **Label accuracy** of conditional models: how often the classifier reads the requested digit.
* **IWAE NLL bound** of the VAEs: :math:`-\frac1N \sum_x \mathcal L_k(x) \ge -\frac1N \sum_x \log p(x)`
  in nats per image (Burda et al. 2016); for a CVAE it bounds :math:`-\log p(x \mid y)`.

These numbers are **not comparable to Inception-network FIDs in papers**: the feature
extractor is our MNIST classifier, not Inception-v3 on ImageNet, the sample sizes are small,
and the offline data split is smaller than the official one. Use them to compare models
trained here with each other and with the real-vs-real baseline. The Bernoulli decoder's NLL
on grey-level pixels is a cross-entropy, not the likelihood of a normalised density, so the
NLL bounds compare the VAEs here with each other, not with papers that binarise MNIST.
"""
__doc__ = (__doc__ or "") + _IMAGE_METRICS_DOC


def _check_images(x: Tensor, name: str = "x") -> Tensor:
    """``x`` as float ``(N, 1, 28, 28)`` in [0, 1], or a clear error."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of images, got {type(x).__name__}")
    if x.ndim == 2 and x.shape[1] == 784:
        x = x.reshape(-1, 1, 28, 28)
    elif x.ndim == 3 and tuple(x.shape[1:]) == (28, 28):
        x = x.unsqueeze(1)
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"{name} must be MNIST images of shape (N, 1, 28, 28), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one image")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be float images in [0, 1], got dtype {x.dtype} (divide uint8 pixels by 255)")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = " (a tanh generator's output: map it with (x + 1) / 2)" if lo < -0.05 else ""
        raise ValueError(f"{name} must have pixel values in [0, 1], got range [{lo:.3g}, {hi:.3g}]{hint}")
    return x


class MNISTClassifier(nn.Module):
    r"""The small CNN whose features and probabilities the image metrics use.

    ``x: (N, 1, 28, 28)`` in [0, 1] -> standardise with MNIST's pixel mean 0.1307 and standard
    deviation 0.3081 -> conv 4x4 stride 2 (``channels[0]``, 14x14) -> ReLU -> conv 4x4 stride 2
    (``channels[1]``, 7x7) -> ReLU -> linear to ``hidden`` -> ReLU = the features
    :math:`\phi(x)` -> dropout -> linear to 10 logits.

    Args:
        channels: widths of the two convolutions.
        hidden: feature dimension (128).
        dropout: dropout probability before the last layer (training only).
    """

    MEAN, STD = 0.1307, 0.3081

    def __init__(self, channels: tuple[int, int] | list[int] = (16, 32), hidden: int = 128, dropout: float = 0.25,
                 n_classes: int = 10):
        super().__init__()
        if len(channels) != 2 or min(channels) < 1:
            raise ValueError(f"channels must be two positive widths, got {list(channels)}")
        if hidden < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"need hidden >= 1 and 0 <= dropout < 1, got {hidden}, {dropout}")
        c1, c2 = (int(c) for c in channels)
        self.conv1 = nn.Conv2d(1, c1, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 4, stride=2, padding=1)
        self.fc = nn.Linear(c2 * 7 * 7, hidden)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_classes)

    def features(self, x: Tensor) -> Tensor:
        """``x: (N, 1, 28, 28)`` -> penultimate features ``(N, hidden)``."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"MNISTClassifier expects x of shape (N, 1, 28, 28), got {tuple(x.shape)}")
        h = (x - self.MEAN) / self.STD
        h = F.relu(self.conv1(h))
        h = F.relu(self.conv2(h))
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        """``x: (N, 1, 28, 28)`` -> logits ``(N, 10)``."""
        return self.head(self.dropout(self.features(x)))


def mnist_classifier(cfg=None, *, progress: bool = True, retrain: bool = False,
                     verbose: bool = True) -> MNISTClassifier:
    """The metrics' classifier: trained once by :mod:`companion.recipes.classifier`, then loaded from the cache.

    The cache key (:func:`companion.train.train_or_load`) holds the config and whether the
    data is full MNIST or the offline fallback, so the two never share weights. With
    ``verbose``, prints the test accuracy (and which data it was measured on); it is also
    stored as ``model.test_accuracy``.

    Args:
        cfg: a :class:`companion.recipes.classifier.Config` (default: the default config).
        progress: show the training progress bar.
        retrain: ignore the cache.
        verbose: print the test accuracy.

    Returns:
        The classifier in ``eval()`` mode.
    """
    from dataclasses import asdict

    from companion.data import mnist_is_fallback
    from companion.recipes import classifier as recipe
    from companion.train import train_or_load

    cfg = recipe.Config() if cfg is None else cfg
    model = recipe.build_model(cfg)
    key = {**asdict(cfg), "data": "mnist-fallback" if mnist_is_fallback() else "mnist"}
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", UserWarning)  # the fallback warning; the printout says it
        train_or_load("mnist-classifier", model, lambda m: recipe.train(cfg, m, progress=progress), key,
                      retrain=retrain)
        model.eval()
        result = recipe.evaluate(cfg, model)
    model.test_accuracy = result["accuracy"]
    if verbose:
        data = ("offline fallback: trained on the first 8,000 official test images" if result["fallback"]
                else "full MNIST: trained on the 60,000 training images")
        print(f"MNIST classifier: test accuracy {result['accuracy']:.2%} on {int(result['n_test']):,} "
              f"held-out images ({data}).")
    return model


@torch.no_grad()
def classifier_outputs(classifier: nn.Module, x: Tensor, *, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """Features and class probabilities of images ``x: (N, 1, 28, 28)`` in [0, 1].

    Returns:
        ``(phi, probs)``: ``(N, hidden)`` features and ``(N, 10)`` probabilities, float64.
    """
    x = _check_images(x)
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    feats, probs = [], []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device=device, dtype=torch.float32)
        phi = classifier.features(xb)
        feats.append(phi.double().cpu())
        probs.append(torch.softmax(classifier.head(phi).double(), -1).cpu())
    classifier.train(was_training)
    return torch.cat(feats), torch.cat(probs)


def gaussian_fit(phi: Tensor) -> tuple[Tensor, Tensor]:
    r"""Mean :math:`\mu` ``(F,)`` and unbiased covariance :math:`\Sigma` ``(F, F)`` of ``phi: (N, F)``, float64."""
    if phi.ndim != 2 or phi.shape[0] < 2:
        raise ValueError(f"need features of shape (N, F) with N >= 2, got {tuple(phi.shape)}")
    phi = phi.double()
    return phi.mean(0), torch.cov(phi.T, correction=1).reshape(phi.shape[1], phi.shape[1])


def _sqrt_psd(a: Tensor) -> Tensor:
    evals, evecs = torch.linalg.eigh((a + a.T) / 2)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def frechet_distance(mu_1: Tensor, sigma_1: Tensor, mu_2: Tensor, sigma_2: Tensor) -> float:
    r"""Squared Fréchet distance between :math:`\mathcal N(\mu_1, \Sigma_1)` and :math:`\mathcal N(\mu_2, \Sigma_2)`.

    .. math::

        d^2 = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{Tr}\Sigma_1 + \operatorname{Tr}\Sigma_2
              - 2 \operatorname{Tr}\big(\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2}\big)^{1/2}.

    :math:`\operatorname{Tr}(\Sigma_1 \Sigma_2)^{1/2}` is computed as the trace of the symmetric
    square root :math:`(\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2})^{1/2}` (same eigenvalues), in
    float64 with eigendecompositions, so no complex parts appear.

    Args:
        mu_1, mu_2: means ``(F,)``; sigma_1, sigma_2: covariances ``(F, F)`` (symmetric PSD).
    """
    mu_1, mu_2 = torch.as_tensor(mu_1, dtype=torch.float64), torch.as_tensor(mu_2, dtype=torch.float64)
    sigma_1, sigma_2 = torch.as_tensor(sigma_1, dtype=torch.float64), torch.as_tensor(sigma_2, dtype=torch.float64)
    f = mu_1.shape[-1] if mu_1.ndim == 1 else -1
    if mu_1.ndim != 1 or mu_2.shape != mu_1.shape or sigma_1.shape != (f, f) or sigma_2.shape != (f, f):
        raise ValueError(f"need mu_1, mu_2 of shape (F,) and sigma_1, sigma_2 of shape (F, F); got "
                         f"{tuple(mu_1.shape)}, {tuple(mu_2.shape)}, {tuple(sigma_1.shape)}, {tuple(sigma_2.shape)}")
    root_1 = _sqrt_psd(sigma_1)
    middle = root_1 @ sigma_2 @ root_1
    tr_covmean = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    diff = mu_1 - mu_2
    d2 = diff @ diff + torch.trace(sigma_1) + torch.trace(sigma_2) - 2 * tr_covmean
    return max(float(d2), 0.0)  # tiny negative values are round-off


def feature_fid(x_1: Tensor, x_2: Tensor, classifier: nn.Module) -> float:
    """FID on MNIST features: the Fréchet distance of the classifier's penultimate features of two image sets.

    Not comparable to Inception-network FIDs in papers (see :data:`NOT_COMPARABLE_TO_PAPERS`).
    Compare sets of equal size: the finite-sample bias grows as the sets shrink.
    """
    phi_1, _ = classifier_outputs(classifier, x_1)
    phi_2, _ = classifier_outputs(classifier, x_2)
    return frechet_distance(*gaussian_fit(phi_1), *gaussian_fit(phi_2))


def _check_probs(probs: Tensor) -> Tensor:
    if not isinstance(probs, Tensor) or probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must be a non-empty (N, K) tensor of class probabilities, got "
                         f"{tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__}")
    probs = probs.double()
    if float(probs.min()) < 0 or not torch.allclose(probs.sum(-1), torch.ones(probs.shape[0], dtype=torch.float64),
                                                    atol=1e-4):
        raise ValueError("each row of probs must be a probability vector (>= 0, summing to 1); pass softmax outputs")
    return probs


def inception_score(probs: Tensor) -> float:
    r"""The (classifier) inception score, :math:`\exp\big(\frac1N \sum_i \mathrm{KL}(p(y \mid x_i) \| \hat p(y))\big)`.

    :math:`\hat p(y) = \frac1N \sum_i p(y \mid x_i)`. It lies in :math:`[1, K]`: 1 when every
    sample gets the same prediction, K when every sample is one class with certainty and the K
    classes are equally frequent. One split (the whole set). Not comparable to Inception-v3
    scores in papers.

    Args:
        probs: ``(N, K)`` class probabilities of N samples.
    """
    probs = _check_probs(probs)
    marginal = probs.mean(0, keepdim=True)
    kl = torch.special.xlogy(probs, probs).sum(-1) - torch.special.xlogy(probs, marginal).sum(-1)
    return float(torch.exp(kl.mean()))


def class_histogram(predictions: Tensor, n_classes: int = 10) -> Tensor:
    """Counts of each predicted class ``(K,)``, from probabilities ``(N, K)`` (argmax) or integer labels ``(N,)``."""
    if predictions.ndim == 2:
        labels = _check_probs(predictions).argmax(-1)
        n_classes = predictions.shape[1]
    elif predictions.ndim == 1 and not predictions.dtype.is_floating_point:
        labels = predictions
    else:
        raise ValueError(f"pass (N, K) probabilities or (N,) integer labels, got {tuple(predictions.shape)} "
                         f"{predictions.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    return torch.bincount(labels.long(), minlength=n_classes)


def class_coverage(histogram: Tensor, min_share: float = 0.5) -> float:
    """Fraction of classes predicted at least ``min_share`` times their fair share ``N / K``.

    1.0 = every digit is generated reasonably often; 0.1 = one digit only (mode collapse).
    """
    if histogram.ndim != 1 or histogram.numel() == 0 or int(histogram.sum()) <= 0:
        raise ValueError("histogram must be a non-empty (K,) vector of counts with a positive sum")
    if not 0.0 < min_share <= 1.0:
        raise ValueError(f"min_share must be in (0, 1], got {min_share}")
    k, n = histogram.numel(), float(histogram.sum())
    return float((histogram.double() >= min_share * n / k).double().mean())


def class_kl_to_uniform(histogram: Tensor) -> float:
    """KL(predicted-class frequencies || uniform) in nats: 0 when balanced, log K for a single class."""
    if histogram.ndim != 1 or int(histogram.sum()) <= 0:
        raise ValueError("histogram must be a (K,) vector of counts with a positive sum")
    p = histogram.double() / histogram.sum()
    return float((torch.special.xlogy(p, p)).sum() + _math.log(histogram.numel()))


def label_accuracy(probs: Tensor, labels: Tensor) -> float:
    """How often the classifier predicts the requested label (conditional models)."""
    probs = _check_probs(probs)
    if labels.shape != (probs.shape[0],):
        raise ValueError(f"labels must have shape ({probs.shape[0]},), got {tuple(labels.shape)}")
    return float((probs.argmax(-1) == labels.to(probs.device)).double().mean())


def image_metrics(x: Tensor, classifier: nn.Module, reference: Tensor, *, labels: Tensor | None = None) -> dict:
    """Every shared image metric of samples ``x`` against real ``reference`` images.

    Returns:
        ``{"fid", "inception_score", "coverage", "class_kl", "histogram" (list), "n"}`` and,
        with ``labels`` (the digits a conditional model was asked for), ``"label_accuracy"``.
        FID is the feature FID against ``reference``; use as many samples as reference images.
    """
    phi, probs = classifier_outputs(classifier, x)
    phi_ref, _ = classifier_outputs(classifier, reference)
    hist = class_histogram(probs)
    out = {
        "fid": frechet_distance(*gaussian_fit(phi), *gaussian_fit(phi_ref)),
        "inception_score": inception_score(probs),
        "coverage": class_coverage(hist),
        "class_kl": class_kl_to_uniform(hist),
        "histogram": [int(c) for c in hist],
        "n": int(x.shape[0]),
    }
    if labels is not None:
        out["label_accuracy"] = label_accuracy(probs, labels)
    return out


def reference_images(split: str, n: int | None = None, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` images and labels of an MNIST split, drawn at random (seeded) without replacement.

    Random, not the first ``n``: the official test set is ordered (its first 5,000 images come
    from a group of writers whose digits are cleaner than the last 5,000), so its first images are
    not a fair sample of it. With ``n`` = the size of the split (the default) this is the whole
    split, shuffled.
    """
    from companion.data import load_mnist

    with _warnings.catch_warnings():
        _warnings.filterwarnings("ignore", message=".*offline fallback.*")
        x, y = load_mnist(split)
    n = x.shape[0] if n is None else int(n)
    if not 1 <= n <= x.shape[0]:
        raise ValueError(f"n must be in [1, {x.shape[0]}] for the {split} split, got {n}")
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def real_baseline(classifier: nn.Module, n: int | None = None, *, seed: int = 0) -> dict:
    """The metrics of real images, scored as if they were samples: what a perfect model of the data gets.

    FID: ``n`` random training images against the ``n`` random test images that models are scored
    against (:func:`reference_images` with the same ``seed``): the level a model that reproduced
    its training distribution exactly would reach at this sample size (two finite samples never
    score 0). IS, coverage and label accuracy: of those test images, which the classifier never
    saw (on its own training images it is over-confident).

    On the offline fallback split the training images (the first 8,000 official test images)
    mix two groups of writers and the test images (the last 2,000) come from one, so the
    training data itself is some distance from the test images and a model can land below this
    baseline. On full MNIST both splits mix the same groups.

    Args:
        n: images on each side (default: the size of the test split).
    """
    from companion.data import load_mnist

    with _warnings.catch_warnings():
        _warnings.filterwarnings("ignore", message=".*offline fallback.*")
        n_test = load_mnist("test")[0].shape[0]
    n = n_test if n is None else int(n)
    x_ref, y_ref = reference_images("test", n, seed=seed)
    x_train, _ = reference_images("train", n, seed=seed)
    return image_metrics(x_ref, classifier, x_train, labels=y_ref)  # the FID is symmetric


class _Conditioned:
    """A CVAE seen as the unconditional model p(x, z | y) of fixed labels, for :func:`companion.vae.iwae_bound`."""

    def __init__(self, model: nn.Module, y: Tensor):
        self.model, self.y = model, y

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        from companion.vae import gaussian_log_prob

        one_hot = F.one_hot(self.y, self.model.n_classes).to(z.dtype).expand(*z.shape[:-1], -1)
        logits = self.model.decoder(torch.cat([z, one_hot], -1))
        xf = x.flatten(1).expand_as(logits)
        return -F.binary_cross_entropy_with_logits(logits, xf, reduction="none").sum(-1) + gaussian_log_prob(z)


@torch.no_grad()
def iwae_nll(model: nn.Module, x: Tensor, *, k: int = 100, labels: Tensor | None = None,
             generator: torch.Generator | None = None, batch_size: int = 250) -> float:
    r"""The IWAE bound on the negative log-likelihood, :math:`-\frac1N \sum_x \mathcal L_k(x)`, in nats per image.

    An upper bound on :math:`-\log p_\theta(x)` that tightens as ``k`` grows (``k = 1`` is the
    negative ELBO). For a CVAE pass ``labels``: the bound is then on :math:`-\log p_\theta(x \mid y)`.

    Args:
        model: a :class:`companion.vae.VAE` or (with ``labels``) :class:`companion.vae.CVAE`.
        x: ``(N, 1, 28, 28)`` images in [0, 1].
        k: importance samples per image.
        labels: ``(N,)`` digit labels, for a CVAE.
        generator: seeds the importance samples.
    """
    from companion.vae import iwae_bound

    x = _check_images(x)
    conditional = hasattr(model, "n_classes") and hasattr(model, "decoder")
    if conditional and labels is None:
        raise ValueError(f"{type(model).__name__} is conditional: pass the labels of x")
    if labels is not None and labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        if labels is None:
            bound = iwae_bound(model, xb, k, generator=generator)
        else:
            yb = labels[start : start + batch_size]
            bound = iwae_bound(_Conditioned(model, yb), xb, k, generator=generator, q=model.encode(xb, yb))
        total += float(bound.sum())
    model.train(was_training)
    return -total / x.shape[0]
