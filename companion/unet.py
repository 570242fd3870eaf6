r"""A small U-Net for 28x28 images, conditioned on time and optionally on a class (part "Beyond the articles").

The network of the diffusion and flow-matching chapters: :math:`\varepsilon_\theta(x_t, t)` or
:math:`v_\theta(x_t, t)`, an image in and an image of the same shape out. Time enters through the
sinusoidal embedding of the Transformer's positions (:func:`sinusoidal_time_embedding`,
:math:`\omega_i = 10000^{-i / (d/2)}`)

.. math::

    e(\tau) = \big(\sin(\omega_0 \tau), \dots, \sin(\omega_{d/2-1} \tau),
        \cos(\omega_0 \tau), \dots, \cos(\omega_{d/2-1} \tau)\big),

followed by an MLP; every residual block adds a linear map of it to its feature maps
(:class:`ResBlock`: GroupNorm, SiLU, 3x3 convolution, twice, with a skip connection). A class label
adds a learned embedding to the time embedding; the extra label ``n_classes`` (:attr:`UNet.null_label`)
means "no class", for classifier-free guidance.

The time :math:`\tau` fed to the embedding follows one rule, by dtype: an **integer** tensor is a
diffusion step index (``0 .. T-1``) and is used as is; a **floating** tensor is a flow-matching time
in ``[0, 1]`` and is multiplied by ``time_scale`` (default 1000), so both land in the same range.

Resolutions (``channels = C``): 28x28 with C channels, 14x14 with 2C, 7x7 with 2C, and back up with
skip connections. ``UNet(32)`` has 0.57 M parameters, ``UNet(48)`` 1.3 M (both counts are tested).

Shapes: ``x: (B, in_channels, H, W)`` with H and W divisible by 4; ``t: (B,)``; ``labels: (B,)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["sinusoidal_time_embedding", "ResBlock", "UNet"]


def sinusoidal_time_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    r"""``(B,)`` times :math:`\tau` -> ``(B, dim)`` features :math:`[\sin(\omega_i \tau), \cos(\omega_i \tau)]`.

    :math:`\omega_i = \text{max\_period}^{-i / (dim/2)}`, ``i = 0 .. dim/2 - 1``; ``dim`` even.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"dim must be an even int >= 2, got {dim!r}")
    if t.ndim != 1:
        raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
    half = dim // 2
    omega = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angle = t.float()[:, None] * omega[None, :]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class ResBlock(nn.Module):
    """``h + skip(x)`` with ``h = conv(SiLU(GN(conv(SiLU(GN(x))) + W e))``; ``e: (B, emb_dim)`` the conditioning.

    ``x: (B, in_ch, H, W)`` -> ``(B, out_ch, H, W)``.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int = 8):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class UNet(nn.Module):
    r"""A two-level U-Net (28 -> 14 -> 7 -> 14 -> 28) with time and optional class conditioning.

    Args:
        channels: C, the width at full resolution (2C below it); a multiple of ``groups``.
        n_classes: 0 for an unconditional model (then ``self.null_label`` is None); otherwise labels
            ``0 .. n_classes-1`` plus the null label ``self.null_label = n_classes`` ("no class").
        in_channels: image channels (1 for MNIST); the output has as many.
        time_scale: factor applied to floating times in ``[0, 1]`` before the embedding.
        groups: GroupNorm groups.

    ``forward(x, t, labels=None)``: ``x: (B, in_channels, H, W)`` (H, W divisible by 4); ``t: (B,)``
    integer steps (>= 0) or float times in ``[0, 1]``; ``labels: (B,)`` integers in
    ``[0, n_classes]`` for a conditional model (required), ``None`` for an unconditional one.
    Returns a tensor of ``x``'s shape.
    """

    def __init__(self, channels: int = 32, n_classes: int = 0, in_channels: int = 1, time_scale: float = 1000.0,
                 groups: int = 8):
        super().__init__()
        for name, v, low in (("channels", channels, 1), ("n_classes", n_classes, 0), ("in_channels", in_channels, 1),
                             ("groups", groups, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
        if channels % groups:
            raise ValueError(f"channels must be a multiple of groups = {groups}, got {channels}")
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        C, E = channels, 4 * channels
        self.channels, self.n_classes, self.in_channels = C, n_classes, in_channels
        self.time_scale = float(time_scale)
        self.null_label: int | None = n_classes if n_classes else None  # the label of "no class"
        self.time_mlp = nn.Sequential(nn.Linear(C, E), nn.SiLU(), nn.Linear(E, E))
        self.label_emb = nn.Embedding(n_classes + 1, E) if n_classes else None
        self.conv_in = nn.Conv2d(in_channels, C, 3, padding=1)
        self.down1 = ResBlock(C, C, E, groups)
        self.pool1 = nn.Conv2d(C, C, 3, stride=2, padding=1)
        self.down2 = ResBlock(C, 2 * C, E, groups)
        self.pool2 = nn.Conv2d(2 * C, 2 * C, 3, stride=2, padding=1)
        self.mid1 = ResBlock(2 * C, 2 * C, E, groups)
        self.mid2 = ResBlock(2 * C, 2 * C, E, groups)
        self.unpool2 = nn.Conv2d(2 * C, 2 * C, 3, padding=1)
        self.up2 = ResBlock(4 * C, 2 * C, E, groups)
        self.unpool1 = nn.Conv2d(2 * C, 2 * C, 3, padding=1)
        self.up1 = ResBlock(3 * C, C, E, groups)
        self.norm_out = nn.GroupNorm(groups, C)
        self.conv_out = nn.Conv2d(C, in_channels, 3, padding=1)

    def time_input(self, t: Tensor, batch: int) -> Tensor:
        """``(B,)`` steps or times -> the ``(B,)`` float :math:`\\tau` of the embedding (see the module docstring)."""
        if not isinstance(t, Tensor):
            raise TypeError(f"t must be a tensor of shape (B,), got {type(t).__name__}")
        if t.shape != (batch,):
            raise ValueError(f"t must have shape (B,) = ({batch},), got {tuple(t.shape)}")
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"t must hold integer steps or float times, got dtype {t.dtype}")
        if t.dtype.is_floating_point:
            if batch and (not torch.isfinite(t).all() or float(t.min()) < 0 or float(t.max()) > 1):
                raise ValueError(f"float times t must lie in [0, 1] (integer tensors are steps), got values in "
                                 f"[{float(t.min()):.3g}, {float(t.max()):.3g}]")
            return t.float() * self.time_scale
        if batch and int(t.min()) < 0:
            raise ValueError(f"integer steps t must be >= 0, got {int(t.min())}")
        return t.float()

    def _check_labels(self, labels: Tensor | None, batch: int) -> None:
        if not self.n_classes:
            if labels is not None:
                raise ValueError("this UNet is unconditional (n_classes=0) but labels were given")
            return
        if labels is None:
            raise ValueError(f"this UNet is conditional (n_classes={self.n_classes}): pass labels of shape "
                             f"({batch},), using null_label = {self.null_label} for 'no class'")
        if labels.shape != (batch,) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be (B,) = ({batch},) integer classes, got {tuple(labels.shape)} "
                             f"{labels.dtype}")
        if batch and (int(labels.min()) < 0 or int(labels.max()) > self.n_classes):
            raise ValueError(f"labels must lie in [0, {self.n_classes}] ({self.n_classes} = no class), got values in "
                             f"[{int(labels.min())}, {int(labels.max())}]")

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W), got {tuple(getattr(x, 'shape', ()))}")
        B, _, H, W = x.shape
        if H % 4 or W % 4:
            raise ValueError(f"H and W must be divisible by 4 (two halvings), got {H}x{W}")
        tau = self.time_input(t, B)
        self._check_labels(labels, B)
        emb = self.time_mlp(sinusoidal_time_embedding(tau, self.channels).to(x.dtype))
        if self.label_emb is not None:
            emb = emb + self.label_emb(labels)

        h1 = self.down1(self.conv_in(x), emb)                       # (B, C, H, W)
        h2 = self.down2(self.pool1(h1), emb)                        # (B, 2C, H/2, W/2)
        h = self.mid2(self.mid1(self.pool2(h2), emb), emb)          # (B, 2C, H/4, W/4)
        h = self.unpool2(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.up2(torch.cat([h, h2], dim=1), emb)                # (B, 2C, H/2, W/2)
        h = self.unpool1(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.up1(torch.cat([h, h1], dim=1), emb)                # (B, C, H, W)
        return self.conv_out(F.silu(self.norm_out(h)))
