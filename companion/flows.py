r"""Normalizing flows: RealNVP's affine coupling layers (part "Beyond the articles", chapter on flows).

An invertible map :math:`f` from data :math:`x` to a latent :math:`z = f(x)` with a base density
:math:`p_Z = \mathcal N(0, I)` gives an exact likelihood by the change of variables

.. math::

    \log p_X(x) = \log p_Z(f(x)) + \log \left| \det \frac{\partial f(x)}{\partial x} \right|,
    \qquad f = f_K \circ \dots \circ f_1, \quad
    \log |\det J_f| = \sum_k \log |\det J_{f_k}|.

An affine coupling layer (Dinh, Sohl-Dickstein and Bengio 2017) keeps the coordinates selected by a
binary mask :math:`b` and transforms the others with a scale and shift computed from the kept ones:

.. math::

    y = b \odot x + (1 - b) \odot \big(x \odot e^{s(b \odot x)} + t(b \odot x)\big), \qquad
    \log |\det J| = \sum_j (1 - b_j)\, s_j(b \odot x),

    x = b \odot y + (1 - b) \odot \big(y - t(b \odot y)\big) \odot e^{-s(b \odot y)}

(the Jacobian is triangular; :math:`b \odot y = b \odot x`, so the inverse is as cheap as the
forward pass). For stability the log-scale is soft-clamped,
:math:`s = c \tanh(\tilde s / c)` (:func:`soft_clamp`, ``c = log_scale_bound``): a layer scales by
at most :math:`e^{\pm c}`, and near 0 the clamp is the identity.

:class:`RealNVP` alternates the mask (even coordinates, then odd ones) so every coordinate is
transformed; ``forward`` maps data to latent, ``inverse`` latent to data, ``sample`` draws
:math:`z \sim \mathcal N(0, I)` and inverts.

Shapes: ``x, y, z: (B, D)``; ``log_det: (B,)``.

Exercise checkers (``check_...``, verdicts through :func:`companion.checks.verdict`): the log-normal
density by the 1-D change of variables, an affine coupling's forward pass and log-determinant, and
the log-determinant of a planar flow (Rezende and Mohamed 2015) by the matrix determinant lemma.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from companion.checks import verdict
from companion.layers import mlp

__all__ = ["soft_clamp", "standard_normal_log_prob", "AffineCoupling", "RealNVP", "check_lognormal_log_prob",
           "check_coupling_forward", "check_planar_log_det"]

LOG_2PI = math.log(2 * math.pi)


def soft_clamp(s: Tensor, bound: float) -> Tensor:
    r""":math:`c \tanh(s / c)`: a smooth map onto :math:`(-c, c)` with slope 1 at 0 (``c = bound > 0``)."""
    if bound <= 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    return bound * torch.tanh(s / bound)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    r""":math:`\log \mathcal N(z; 0, I) = -\frac12 (D \log 2\pi + \|z\|^2)`: ``(B, D)`` -> ``(B,)``."""
    return -0.5 * (z.shape[-1] * LOG_2PI + z.pow(2).sum(-1))


def _check_x(x: Tensor, dim: int, who: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{who} takes a torch.Tensor of shape (B, {dim}), got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{who} expects input of shape (B, {dim}), got {tuple(x.shape)}")


class AffineCoupling(nn.Module):
    r"""One affine coupling layer :math:`y = b \odot x + (1 - b) \odot (x \odot e^{s} + t)`.

    Args:
        dim: D, the number of coordinates (>= 2).
        hidden: width of the two hidden layers of the network :math:`b \odot x \mapsto (\tilde s, t)`.
        mask: ``(D,)`` of 0/1 (or bool): 1 marks a coordinate passed through unchanged; it needs
            at least one 1 and one 0.
        log_scale_bound: c of the soft clamp :math:`s = c \tanh(\tilde s / c)`.
        zero_init: start as the identity (last layer zero); else the default initialisation.

    ``forward(x) -> (y, log_det)`` and ``inverse(y) -> x`` with ``x, y: (B, D)``, ``log_det: (B,)``.
    """

    def __init__(self, dim: int, hidden: int, mask: Tensor, *, log_scale_bound: float = 2.0,
                 zero_init: bool = True):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"a coupling layer needs dim >= 2 coordinates, got {dim!r}")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be an int >= 1, got {hidden!r}")
        mask = torch.as_tensor(mask)
        if mask.shape != (dim,):
            raise ValueError(f"mask must have shape (dim,) = ({dim},), got {tuple(mask.shape)}")
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError(f"mask must hold only 0 and 1, got {mask.tolist()}")
        if mask.all() or not mask.any():
            raise ValueError(f"mask must keep some coordinates (1) and transform others (0), got {mask.tolist()}")
        if log_scale_bound <= 0:
            raise ValueError(f"log_scale_bound must be > 0, got {log_scale_bound}")
        self.dim = dim
        self.log_scale_bound = float(log_scale_bound)
        self.register_buffer("mask", mask.to(torch.get_default_dtype()))
        self.net = mlp([dim, hidden, hidden, 2 * dim], "silu")
        if zero_init:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def scale_and_shift(self, x_kept: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(s, t)``, each ``(B, D)`` and zero on the kept coordinates, from :math:`b \odot x`."""
        raw_s, t = self.net(x_kept).chunk(2, dim=-1)
        free = 1 - self.mask
        return soft_clamp(raw_s, self.log_scale_bound) * free, t * free

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x: (B, D)`` -> ``(y, log_det)``: ``y: (B, D)`` and ``log_det: (B,)`` = log|det dy/dx|."""
        _check_x(x, self.dim, type(self).__name__)
        x_kept = x * self.mask
        s, t = self.scale_and_shift(x_kept)
        y = x_kept + (1 - self.mask) * (x * torch.exp(s) + t)
        return y, s.sum(-1)

    def inverse(self, y: Tensor) -> Tensor:
        """``y: (B, D)`` -> ``x: (B, D)`` with ``forward(x)[0] == y``."""
        _check_x(y, self.dim, f"{type(self).__name__}.inverse")
        y_kept = y * self.mask
        s, t = self.scale_and_shift(y_kept)
        return y_kept + (1 - self.mask) * (y - t) * torch.exp(-s)


class RealNVP(nn.Module):
    r"""A stack of ``n_layers`` affine couplings with alternating masks and a standard normal base.

    Args:
        dim: D >= 2.
        n_layers: number of coupling layers (>= 1; use an even number so each coordinate is
            transformed equally often).
        hidden: hidden width of each coupling's network.
        log_scale_bound, zero_init: passed to every :class:`AffineCoupling`.

    ``forward(x) -> (z, log_det)`` (data to latent), ``inverse(z) -> x``, ``log_prob(x) -> (B,)``,
    ``sample(n) -> (n, D)``.
    """

    def __init__(self, dim: int, n_layers: int = 4, hidden: int = 64, *, log_scale_bound: float = 2.0,
                 zero_init: bool = True):
        super().__init__()
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be an int >= 1, got {n_layers!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"RealNVP needs dim >= 2 (a coupling splits the coordinates), got {dim!r}")
        self.dim = dim
        even = (torch.arange(dim) % 2 == 0).to(torch.get_default_dtype())
        self.layers = nn.ModuleList(
            AffineCoupling(dim, hidden, even if k % 2 == 0 else 1 - even, log_scale_bound=log_scale_bound,
                           zero_init=zero_init)
            for k in range(n_layers)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x: (B, D)`` -> ``(z, log_det)``, ``z = f(x): (B, D)``, ``log_det = log|det df/dx|: (B,)``."""
        _check_x(x, self.dim, type(self).__name__)
        log_det = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z: Tensor) -> Tensor:
        """``z: (B, D)`` -> ``x = f^{-1}(z): (B, D)``."""
        _check_x(z, self.dim, f"{type(self).__name__}.inverse")
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z

    def log_prob(self, x: Tensor) -> Tensor:
        r""":math:`\log p_X(x) = \log \mathcal N(f(x); 0, I) + \log |\det J_f(x)|`: ``(B, D)`` -> ``(B,)`` nats."""
        z, log_det = self(x)
        return standard_normal_log_prob(z) + log_det

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples ``(n, D)``: draw z ~ N(0, I) (seeded by ``generator``) and invert the flow."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        p = next(self.parameters())
        z = torch.randn(n, self.dim, generator=generator, dtype=p.dtype).to(p.device)
        return self.inverse(z)


def check_lognormal_log_prob(fn) -> bool:
    r"""Exercise checker: ``fn(x)`` should be :math:`\log p_X(x)` for :math:`X = e^Z`, :math:`Z \sim \mathcal N(0, 1)`.

    ``x: (N,)`` positive -> ``(N,)`` nats.
    """
    x = torch.linspace(0.05, 8.0, 200, dtype=torch.float64)
    want = torch.distributions.LogNormal(0.0, 1.0).log_prob(x)
    got = torch.as_tensor(fn(x.clone()), dtype=torch.float64)
    if got.shape != want.shape:
        return verdict(False, f"expected one log-density per point, shape {tuple(want.shape)}, got {tuple(got.shape)}")
    if torch.allclose(got, want, atol=1e-6):
        return verdict(True, "log p_X(x) = log N(log x; 0, 1) - log x: the base density times |d log x / dx| = 1/x")
    if torch.allclose(got, want + torch.log(x), atol=1e-6):
        return verdict(False, "this is log N(log x; 0, 1) alone: the Jacobian factor |dz/dx| = 1/x is missing "
                              "(without it the density integrates to e^(1/2), not 1)")
    if torch.allclose(got, want + 2 * torch.log(x), atol=1e-6):
        return verdict(False, "the Jacobian factor has the wrong direction: multiply by |dz/dx| = 1/x, not |dx/dz| = x")
    worst = int((got - want).abs().argmax())
    return verdict(False, f"at x = {x[worst]:.3f} expected {want[worst]:.5f}, got {got[worst]:.5f}")


def _random_coupling(seed: int = 0) -> AffineCoupling:
    g = torch.Generator().manual_seed(seed)
    layer = AffineCoupling(5, 16, torch.tensor([1, 0, 1, 0, 0]), zero_init=False).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return layer


def check_coupling_forward(fn) -> bool:
    r"""Exercise checker: ``fn(layer, x) -> (y, log_det)`` should reproduce :meth:`AffineCoupling.forward`.

    ``fn`` may use ``layer.mask`` and ``layer.scale_and_shift(x_kept)`` (which returns :math:`(s, t)`).
    """
    layer = _random_coupling()
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        y_ref, ld_ref = layer(x)
        out = fn(layer, x.clone())
    if not isinstance(out, tuple) or len(out) != 2:
        return verdict(False, "return a pair (y, log_det)")
    y, ld = (torch.as_tensor(t, dtype=torch.float64) for t in out)
    if y.shape != y_ref.shape or ld.shape != ld_ref.shape:
        return verdict(False, f"expected y of shape {tuple(y_ref.shape)} and log_det of shape {tuple(ld_ref.shape)}, "
                              f"got {tuple(y.shape)} and {tuple(ld.shape)}")
    keep = layer.mask.bool()
    if not torch.allclose(y[:, keep], x[:, keep], atol=1e-9):
        return verdict(False, "the kept coordinates (mask = 1) must pass through unchanged")
    if not torch.allclose(y, y_ref, atol=1e-8):
        return verdict(False, "y differs on the transformed coordinates: y = x * exp(s) + t there, with (s, t) "
                              "computed from the kept coordinates x * mask")
    s, _ = layer.scale_and_shift(x * layer.mask)
    if torch.allclose(ld, torch.exp(s).sum(-1), atol=1e-8) or torch.allclose(ld, torch.exp(s).prod(-1), atol=1e-8):
        return verdict(False, "y is right; log_det is the log of the determinant: the sum of the log-scales s, "
                              "not of the scales exp(s)")
    if not torch.allclose(ld, ld_ref, atol=1e-8):
        return verdict(False, f"y is right; log_det differs by up to {(ld - ld_ref).abs().max():.3g}")
    return verdict(True, "y = b*x + (1-b)*(x*exp(s) + t), log|det J| = sum of s over the transformed coordinates")


def check_planar_log_det(fn) -> bool:
    r"""Exercise checker: ``fn(z, u, w, b)`` should be :math:`\log|\det J|` of the planar flow
    :math:`f(z) = z + u \tanh(w^\top z + b)`: ``z: (B, D)``, ``u, w: (D,)``, ``b`` a float -> ``(B,)``.
    """
    from torch.autograd.functional import jacobian

    g = torch.Generator().manual_seed(2)
    d = 4
    z = torch.randn(16, d, generator=g, dtype=torch.float64)
    u = torch.randn(d, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    u = u + (0.5 - u @ w) * w / (w @ w)  # u.w = 0.5 > -1: the planar map is invertible
    b = 0.3
    want = torch.stack([torch.linalg.slogdet(jacobian(lambda v: v + u * torch.tanh(w @ v + b), zi))[1] for zi in z])
    got = torch.as_tensor(fn(z.clone(), u.clone(), w.clone(), b), dtype=torch.float64)
    if got.shape != want.shape:
        return verdict(False, f"expected one log-determinant per row of z, shape {tuple(want.shape)}, "
                              f"got {tuple(got.shape)}")
    if torch.allclose(got, want, atol=1e-8):
        return verdict(True, "log|1 + h'(w.z + b) u.w| by the matrix determinant lemma, O(D) instead of O(D^3)")
    h_prime = 1 - torch.tanh(z @ w + b) ** 2
    if torch.allclose(got, torch.log(torch.abs(h_prime * (u @ w))), atol=1e-8):
        return verdict(False, "the identity's 1 is missing: det(I + a u w^T) = 1 + a w^T u")
    worst = int((got - want).abs().argmax())
    return verdict(False, f"for row {worst} expected {want[worst]:.6f}, got {got[worst]:.6f} (autograd Jacobian)")
