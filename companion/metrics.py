r"""Metrics of generated MNIST images, on the features of a small classifier (chapter "Capstone: MNIST end to end").

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
* **Precision and recall** of Kynkäänniemi et al. (2019): FID mixes two failures into one
  number; precision (are the samples realistic?) and recall (is the variety of the data
  covered?) separate them. Each feature set :math:`\Phi` stands for its manifold, the union of
  balls around its points whose radius is the distance to the point's k-th nearest neighbour in
  the set; precision is the fraction of generated points inside the real manifold, recall the
  fraction of real points inside the generated one (:func:`precision_recall`).

The classifier itself is :class:`companion.classifiers.MNISTClassifier`, trained once and cached
by :func:`companion.recipes.classifier.mnist_classifier`; the VAEs' IWAE bound is
:func:`companion.vae.iwae_nll`. This module is pure: it receives images and a classifier and
loads nothing.

These numbers are **not comparable to Inception-network FIDs in papers**: the feature
extractor is our MNIST classifier, not Inception-v3 on ImageNet, the sample sizes are small,
and the offline data split is smaller than the official one. Use them to compare models
trained here with each other and with the real-vs-real baseline. The Bernoulli decoder's NLL
on grey-level pixels is a cross-entropy, not the likelihood of a normalised density, so the
NLL bounds compare the VAEs here with each other, not with papers that binarise MNIST.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from companion.checks import verdict

__all__ = [
    "NOT_COMPARABLE_TO_PAPERS",
    "check_images",
    "classifier_outputs",
    "gaussian_fit",
    "frechet_distance",
    "feature_fid",
    "inception_score",
    "class_histogram",
    "class_coverage",
    "class_kl_to_uniform",
    "label_accuracy",
    "precision_recall",
    "image_metrics",
    "check_collapse_prediction",
]

NOT_COMPARABLE_TO_PAPERS = (
    "Feature FID and IS here use a small MNIST classifier trained by this package, not the "
    "Inception-v3 network of the papers: the numbers rank models on MNIST against each other and "
    "against the real-vs-real baseline, and are NOT comparable to published FID/IS values."
)


def check_images(x: Tensor, name: str = "x") -> Tensor:
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


@torch.no_grad()
def classifier_outputs(classifier: nn.Module, x: Tensor, *, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """Features and class probabilities of images ``x: (N, 1, 28, 28)`` in [0, 1].

    Returns:
        ``(phi, probs)``: ``(N, hidden)`` features and ``(N, 10)`` probabilities, float64.
    """
    x = check_images(x)
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


def _check_covariance(name: str, sigma: Tensor) -> None:
    """A covariance must be finite, symmetric and positive semi-definite (round-off tolerated)."""
    if not bool(torch.isfinite(sigma).all()):
        raise ValueError(f"{name} has non-finite entries; a covariance must be finite")
    scale = max(float(sigma.abs().max()), 1e-300)
    asym = float((sigma - sigma.T).abs().max())
    if asym > 1e-8 * scale:
        raise ValueError(f"{name} is not symmetric (max |S - S^T| = {asym:.3g}); pass a covariance matrix")
    lowest = float(torch.linalg.eigvalsh((sigma + sigma.T) / 2).min())
    if lowest < -1e-8 * scale:
        raise ValueError(f"{name} is not positive semi-definite (smallest eigenvalue {lowest:.3g} < 0); "
                         "pass a covariance matrix, e.g. from gaussian_fit")


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
    for name, sigma in (("sigma_1", sigma_1), ("sigma_2", sigma_2)):
        _check_covariance(name, sigma)
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


def _check_histogram(histogram: Tensor) -> None:
    if not isinstance(histogram, Tensor) or histogram.ndim != 1 or histogram.numel() == 0:
        got = tuple(histogram.shape) if isinstance(histogram, Tensor) else type(histogram).__name__
        raise ValueError(f"histogram must be a non-empty (K,) tensor of class counts, got {got}")
    if not bool(torch.isfinite(histogram.double()).all()) or float(histogram.min()) < 0:
        raise ValueError(f"histogram must hold counts >= 0, got minimum {float(histogram.min())}")
    if float(histogram.sum()) <= 0:
        raise ValueError("histogram must count at least one sample (its sum is 0)")


def class_coverage(histogram: Tensor, min_share: float = 0.5) -> float:
    """Fraction of classes predicted at least ``min_share`` times their fair share ``N / K``.

    1.0 = every digit is generated reasonably often; 0.1 = one digit only (mode collapse).
    """
    _check_histogram(histogram)
    if not 0.0 < min_share <= 1.0:
        raise ValueError(f"min_share must be in (0, 1], got {min_share}")
    k, n = histogram.numel(), float(histogram.sum())
    return float((histogram.double() >= min_share * n / k).double().mean())


def class_kl_to_uniform(histogram: Tensor) -> float:
    """KL(predicted-class frequencies || uniform) in nats: 0 when balanced, log K for a single class."""
    _check_histogram(histogram)
    p = histogram.double() / histogram.sum()
    return float((torch.special.xlogy(p, p)).sum() + math.log(histogram.numel()))


def label_accuracy(probs: Tensor, labels: Tensor) -> float:
    """How often the classifier predicts the requested label (conditional models)."""
    probs = _check_probs(probs)
    if labels.shape != (probs.shape[0],):
        raise ValueError(f"labels must have shape ({probs.shape[0]},), got {tuple(labels.shape)}")
    return float((probs.argmax(-1) == labels.to(probs.device)).double().mean())


def _check_features(x, name: str) -> Tensor:
    """``x`` as a finite float64 ``(N, F)`` tensor, or a clear error."""
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be an (N, F) tensor of features, got {type(x).__name__}") from err
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, F) tensor of features (one row per image), got shape "
                         f"{tuple(x.shape)}")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must hold real-valued features, got dtype {x.dtype}")
    x = x.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} has non-finite entries (nan or inf); features must be finite")
    return x


def _kth_neighbour_radii(phi: Tensor, k: int, batch_size: int) -> Tensor:
    """``r_k(phi_i)``: the distance of each row of ``phi: (N, F)`` to its k-th nearest other row, ``(N,)``."""
    radii = []
    for start in range(0, phi.shape[0], batch_size):
        d = torch.cdist(phi[start : start + batch_size], phi, compute_mode="donot_use_mm_for_euclid_dist")
        rows = torch.arange(d.shape[0])
        d[rows, rows + start] = math.inf  # a point is not its own neighbour; its duplicates are
        radii.append(d.kthvalue(k, dim=1).values)
    return torch.cat(radii)


def precision_recall(real_features: Tensor, fake_features: Tensor, k: int = 3, *,
                     batch_size: int = 1024) -> tuple[float, float]:
    r"""Improved precision and recall of generated features against real ones (Kynkäänniemi et al., 2019).

    A set of feature vectors :math:`\Phi` stands for the union of balls around its points, each
    ball reaching the point's k-th nearest neighbour in :math:`\Phi` (the point itself excluded):

    .. math::

        r_k(\phi', \Phi) = \lVert \phi' - \mathrm{NN}_k(\phi', \Phi) \rVert, \qquad
        f(\phi, \Phi) = \begin{cases} 1 & \text{if } \lVert \phi - \phi' \rVert \le r_k(\phi', \Phi)
        \text{ for some } \phi' \in \Phi, \\ 0 & \text{otherwise;} \end{cases}

    .. math::

        \mathrm{precision} = \frac1M \sum_{j=1}^M f(\phi_g^{(j)}, \Phi_r), \qquad
        \mathrm{recall} = \frac1N \sum_{i=1}^N f(\phi_r^{(i)}, \Phi_g).

    Precision is the fraction of generated points that land inside the real manifold (sample
    quality), recall the fraction of real points inside the generated manifold (coverage: mode
    collapse lowers it). Samples that copy training points score precision 1; a generator that
    repeats one image has a manifold of one point and recall near 0. The paper uses k = 3 on
    VGG-16 features of 50,000 images per set; here the features are whatever you pass (e.g. the
    MNIST classifier's, from :func:`classifier_outputs`), so the numbers compare models with each
    other, not with the paper. Reference: :cite:`kynkaanniemi2019improved`.

    Distances are exact Euclidean distances in float64 (``torch.cdist`` without the matrix-product
    shortcut, so duplicated points are at distance exactly 0), computed ``batch_size`` rows at a
    time: memory is ``O(batch_size * max(N, M))``, never ``N x M``.

    Args:
        real_features: ``(N, F)`` features of real images :math:`\Phi_r`.
        fake_features: ``(M, F)`` features of generated images :math:`\Phi_g`.
        k: the neighbour that sets each ball's radius, ``k >= 1``; both sets need ``k + 1`` rows.
        batch_size: rows of distances computed at once.

    Returns:
        ``(precision, recall)``, each in [0, 1].
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1 (the neighbour that sets each radius), got {k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    phi_r = _check_features(real_features, "real_features")
    phi_g = _check_features(fake_features, "fake_features")
    if phi_r.shape[1] != phi_g.shape[1]:
        raise ValueError(f"real_features and fake_features must have the same feature dimension F, got "
                         f"{tuple(phi_r.shape)} and {tuple(phi_g.shape)}")
    for name, phi in (("real_features", phi_r), ("fake_features", phi_g)):
        if phi.shape[0] < k + 1:
            raise ValueError(f"{name} has {phi.shape[0]} rows but k={k} needs at least k + 1 = {k + 1} "
                             "(each point's k-th nearest neighbour other than itself)")
    r_real = _kth_neighbour_radii(phi_r, k, batch_size)
    r_fake = _kth_neighbour_radii(phi_g, k, batch_size)
    fake_inside = torch.zeros(phi_g.shape[0], dtype=torch.bool)
    real_inside = torch.zeros(phi_r.shape[0], dtype=torch.bool)
    for start in range(0, phi_g.shape[0], batch_size):
        stop = start + batch_size
        d = torch.cdist(phi_g[start:stop], phi_r, compute_mode="donot_use_mm_for_euclid_dist")  # (B, N)
        fake_inside[start:stop] = (d <= r_real[None, :]).any(1)
        real_inside |= (d <= r_fake[start:stop, None]).any(0)
    return float(fake_inside.double().mean()), float(real_inside.double().mean())


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


def check_collapse_prediction(inception: float, class_kl: float, n_kept: int = 5, n_classes: int = 10) -> bool:
    """Exercise checker (notebook ``06_1``): the inception score and the class KL of a generator that
    makes only ``n_kept`` of the ``n_classes`` digits, equally often, each classified with certainty.

    The truth is computed by :func:`inception_score` and :func:`class_kl_to_uniform` on such
    one-hot predictions; relative tolerance 1e-3.
    """
    if not 1 <= n_kept <= n_classes:
        raise ValueError(f"need 1 <= n_kept <= n_classes, got n_kept = {n_kept}, n_classes = {n_classes}")
    probs = torch.eye(n_classes, dtype=torch.float64)[torch.arange(100 * n_kept) % n_kept]  # (N, K) one-hot
    truth = {"IS": inception_score(probs), "class KL": class_kl_to_uniform(class_histogram(probs))}
    given = {"IS": float(inception), "class KL": float(class_kl)}
    says = [f"{name} = {value:.4f}" if math.isclose(given[name], value, rel_tol=1e-3, abs_tol=1e-6)
            else f"{name}: you gave {given[name]:.4f}, expected {value:.4f}" for name, value in truth.items()]
    ok = all(math.isclose(given[k], v, rel_tol=1e-3, abs_tol=1e-6) for k, v in truth.items())
    return verdict(ok, "; ".join(says) + ("" if ok else " (IS = exp of the mean KL from each prediction to the "
                                                     "marginal; class KL = KL(class frequencies || uniform))"))

