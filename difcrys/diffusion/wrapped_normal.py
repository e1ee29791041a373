"""Wrapped-normal corruption of fractional coordinates on the torus ``[0, 1)^3``.

The forward kernel is the isotropic wrapped normal (DiffCSP, Jiao et al., NeurIPS 2023, Eq. 5;
MatterGen, Zeni et al., Nature 2025; the seed's ``N_W``):

.. math::  q(x_t | x_0) = \\mathcal N_W(x_t; x_0, σ_t^2 I)
           = \\sum_{k \\in \\mathbb Z^3} \\mathcal N(x_t; x_0 - k, σ_t^2 I),

a variance-exploding process (``x_t = (x_0 + σ_t ε) mod 1``). It factorises over the three
coordinates, so every quantity below is a product (or sum of logs) of 1-D wrapped normals.
With ``d = x_t − x_0`` the score is

.. math::  ∇_{x_t} \\log q = \\frac{\\sum_k -\\frac{d + k}{σ^2} e^{-(d+k)^2/2σ^2}}
                                  {\\sum_k e^{-(d+k)^2/2σ^2}} ,

evaluated here with ``d`` wrapped into ``[-1/2, 1/2)`` and the image sum truncated to
``|k| ≤ K``; :func:`n_images` picks the smallest ``K`` for which every dropped term is below
``tol`` times the largest one (``|d + k| > 1/2 + σ sqrt(2 ln(1/tol))``), which the tests compare
with a 101-image sum. Training targets are normalised as in DiffCSP (their Eq. 7) by
``λ(σ) = E[|∂_x log q|^2]`` per coordinate (:func:`score_norm`, computed by quadrature).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["n_images", "wrap", "wrapped_delta", "sample", "logpdf", "score", "score_norm", "pdf_1d"]


def n_images(sigma_max: float, tol: float = 1e-12) -> int:
    """Images per side ``K`` such that all dropped terms are ``< tol`` × the largest (host side)."""
    r = 0.5 + float(sigma_max) * math.sqrt(2.0 * math.log(1.0 / tol))
    return int(math.ceil(r + 0.5))


def wrap(x):
    """``x mod 1`` in ``[0, 1)``."""
    return x - jnp.floor(x)


def wrapped_delta(x, x0):
    """Minimum-image difference ``x − x0`` wrapped into ``[-1/2, 1/2)``."""
    d = x - x0
    return d - jnp.floor(d + 0.5)


def sample(key, x0, sigma):
    """Draw ``x_t ~ N_W(x0, σ² I)``; returns ``(x_t, ε)`` with ``x_t = (x0 + σ ε) mod 1``.

    Args:
        key: PRNG key. x0: ``[..., 3]`` fractional coordinates. sigma: scalar or broadcastable.
    """
    eps = jax.random.normal(key, jnp.shape(x0), jnp.asarray(x0).dtype)
    return wrap(x0 + sigma * eps), eps


def _terms(x, x0, sigma, K):
    d = wrapped_delta(x, x0)[..., None]
    k = jnp.arange(-K, K + 1, dtype=d.dtype)
    sig = jnp.asarray(sigma, d.dtype)
    sig = sig[..., None] if sig.ndim else sig
    z = d + k
    return z, sig, -0.5 * (z / sig) ** 2


def logpdf(x, x0, sigma, K: int = 5):
    """``log N_W(x; x0, σ² I)`` summed over the last (coordinate) axis.

    Args:
        x, x0: ``[..., 3]``. sigma: scalar or ``[...]``/``[..., 3]`` broadcastable to ``x``.
        K: images per side (static).

    Returns:
        ``[...]`` log densities (density w.r.t. Lebesgue measure on the unit torus).
    """
    z, sig, e = _terms(x, x0, sigma, K)
    lp = jax.scipy.special.logsumexp(e, axis=-1) - jnp.log(sig[..., 0] if jnp.ndim(sig) else sig) \
        - 0.5 * jnp.log(2 * jnp.pi)
    return jnp.sum(lp, axis=-1)


def score(x, x0, sigma, K: int = 5):
    """``∇_x log N_W(x; x0, σ² I)`` ``[..., 3]`` (see module docstring), images ``|k| ≤ K``."""
    z, sig, e = _terms(x, x0, sigma, K)
    w = jax.nn.softmax(e, axis=-1)
    return jnp.sum(w * (-z / sig**2), axis=-1)


def pdf_1d(d, sigma, K: int = 50):
    """1-D wrapped-normal density at ``d`` (NumPy, host side), images ``|k| ≤ K``."""
    d = np.asarray(d, float)[..., None]
    k = np.arange(-K, K + 1)
    return np.sum(np.exp(-0.5 * ((d + k) / sigma) ** 2), axis=-1) / (sigma * math.sqrt(2 * math.pi))


def score_norm(sigma, n_grid: int = 20001, K: int | None = None) -> np.ndarray:
    """``λ(σ) = E_{x∼N_W(0,σ²)} [(∂_x log q)^2]`` per coordinate, by trapezoidal quadrature on [-½, ½).

    For small σ, ``λ → 1/σ²`` (the Gaussian limit); for large σ, ``λ → 0`` (uniform limit).

    Args:
        sigma: scalar or ``[m]`` widths (all > 0).

    Returns:
        ``[m]`` float64 array (NumPy).
    """
    sig = np.atleast_1d(np.asarray(sigma, float))
    out = np.empty_like(sig)
    d = np.linspace(-0.5, 0.5, n_grid)
    for i, s in enumerate(sig):
        KK = K or n_images(s)
        k = np.arange(-KK, KK + 1)
        z = d[:, None] + k
        e = -0.5 * (z / s) ** 2
        e -= e.max(axis=1, keepdims=True)
        w = np.exp(e)
        p_rel = w.sum(1)
        sc = (w * (-z / s**2)).sum(1) / p_rel
        p = pdf_1d(d, s, KK)
        out[i] = np.trapezoid(p * sc**2, d)
    return out
