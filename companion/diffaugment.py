r"""DiffAugment: differentiable augmentation of the images a GAN's discriminator sees (chapter "GAN training").

With little training data (8,000 images on the offline MNIST split) a discriminator can
memorise the real images; its gradient then stops telling the generator anything useful.
DiffAugment (Zhao et al., 2020) applies the same random transformation :math:`T` to real *and*
generated images before D, in the discriminator's and in the generator's step:

.. math::

    L_D = \mathbb E_x[f(-D(T(x)))] + \mathbb E_z[f(D(T(G(z))))], \qquad
    L_G = \mathbb E_z[f(-D(T(G(z))))],

with every :math:`T` differentiable in its input, so the generator's gradient passes through it.
Augmenting only the real images would teach G to produce augmented images; augmenting both keeps
the target distribution unchanged. ADA (Karras et al., 2020) adapts the augmentation's strength
during training from a measure of D's overfitting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DIFF_AUGMENT_POLICIES", "parse_diff_augment_policy", "diff_augment"]


DIFF_AUGMENT_POLICIES = ("brightness", "contrast", "translation", "cutout")


def parse_diff_augment_policy(policy: str) -> tuple[str, ...]:
    """Split a DiffAugment policy such as ``"translation,cutout"`` into its known parts.

    The empty string means "no augmentation" and gives ``()``.

    Raises:
        ValueError: a part that is not one of :data:`DIFF_AUGMENT_POLICIES` (named in the message).
    """
    if not isinstance(policy, str):
        raise TypeError(f"policy must be a comma-separated string, got {type(policy).__name__}")
    parts = tuple(p.strip() for p in policy.split(",") if p.strip())
    for part in parts:
        if part not in DIFF_AUGMENT_POLICIES:
            raise ValueError(f"unknown DiffAugment policy {part!r} in {policy!r}; "
                             f"allowed: {', '.join(DIFF_AUGMENT_POLICIES)} (comma-separated)")
    return parts


def _per_image_uniform(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand((x.shape[0], 1, 1, 1), generator=generator).to(device=x.device, dtype=x.dtype)


def _per_image_int(n: int, low: int, high: int, generator: torch.Generator | None, device) -> Tensor:
    """n integers drawn uniformly from [low, high)."""
    return torch.randint(low, high, (n,), generator=generator).to(device)


def _translate(x: Tensor, ratio: float, fill: float, generator: torch.Generator | None) -> Tensor:
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _per_image_int(b, -sy, sy + 1, generator, x.device)  # content moves down by dy ...
    dx = _per_image_int(b, -sx, sx + 1, generator, x.device)  # ... and right by dx
    padded = F.pad(x, [sx, sx, sy, sy], value=fill)  # (B, C, H + 2 sy, W + 2 sx)
    # out[i, j] = x[i - dy, j - dx] = padded[i - dy + sy, j - dx + sx]: a gather, so gradients pass through
    rows = torch.arange(h, device=x.device)[None, :] - dy[:, None] + sy  # (B, H)
    cols = torch.arange(w, device=x.device)[None, :] - dx[:, None] + sx  # (B, W)
    out = padded.gather(2, rows[:, None, :, None].expand(b, x.shape[1], h, padded.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(b, x.shape[1], h, w))


def _cutout(x: Tensor, ratio: float, fill: float, generator: torch.Generator | None) -> Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # the square's centre, as in the reference code: anywhere in the image (odd sizes: up to the edge)
    cy = _per_image_int(b, 0, h + (1 - ch % 2), generator, x.device)
    cx = _per_image_int(b, 0, w + (1 - cw % 2), generator, x.device)
    y0, x0 = cy - ch // 2, cx - cw // 2
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + ch)[:, None])  # (B, H)
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + cw)[:, None])  # (B, W)
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (B, 1, H, W)
    return torch.where(mask, torch.full_like(x, fill), x)


def diff_augment(x: Tensor, policy: str = "translation,cutout", generator: torch.Generator | None = None, *,
                 translation_ratio: float = 0.125, cutout_ratio: float = 0.5, fill: float = 0.0) -> Tensor:
    r"""Differentiable augmentation (DiffAugment, Zhao et al., 2020) of a batch of images.

    The same random transformations, drawn independently per image, are applied to real *and*
    generated images before the discriminator sees them (in both the D and the G step), so D
    cannot memorise a small training set, while every operation is differentiable in x and the
    generator's gradient passes through. Pure function: x is not modified.

    Operations, applied in the order of :data:`DIFF_AUGMENT_POLICIES` (for grey images; the
    reference code's saturation needs colour channels):

    * ``brightness``: :math:`x + (u - 1/2)`, u ~ U[0, 1) per image;
    * ``contrast``: :math:`(x - \bar x)(u + 1/2) + \bar x`, :math:`\bar x` the image's mean;
    * ``translation``: shift by integers :math:`(d_y, d_x)`, each uniform in
      :math:`[-r H, r H]` (r = ``translation_ratio``, rounded), the uncovered border filled with
      ``fill`` (zero padding by default; nothing wraps around);
    * ``cutout``: a square of side ``cutout_ratio`` H (rounded) at a random position set to ``fill``.

    Args:
        x: (B, C, H, W) images.
        policy: comma-separated names from :data:`DIFF_AUGMENT_POLICIES`; ``""`` returns x unchanged.
        generator: seeds the draws (the same seed gives the same augmentation).
        fill: value of the translation's padding and of the cut-out square (0: as in the
            reference code; -1 is the background of images scaled to [-1, 1]).

    Returns:
        (B, C, H, W) augmented images.
    """
    parts = parse_diff_augment_policy(policy)
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a batch of images (B, C, H, W), got shape {tuple(getattr(x, 'shape', ()))}")
    if not 0 <= translation_ratio < 0.5 or not 0 <= cutout_ratio <= 1:
        raise ValueError(f"translation_ratio must be in [0, 0.5) and cutout_ratio in [0, 1], "
                         f"got {translation_ratio} and {cutout_ratio}")
    for name in DIFF_AUGMENT_POLICIES:
        if name not in parts:
            continue
        if name == "brightness":
            x = x + (_per_image_uniform(x, generator) - 0.5)
        elif name == "contrast":
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * (_per_image_uniform(x, generator) + 0.5) + mean
        elif name == "translation":
            x = _translate(x, translation_ratio, fill, generator)
        else:
            x = _cutout(x, cutout_ratio, fill, generator)
    return x
