"""Lattice corruption with an atom-count-dependent limit (MatterGen), on symmetric lattices.

**Representation.** Every lattice ``L`` (rows = lattice vectors, Å) is replaced by its symmetric
polar factor ``S = (L Lᵀ)^{1/2}``: ``L = S U`` with ``U`` orthogonal (a proper rotation for a
right-handed cell), so ``S`` is ``L`` rotated in Cartesian space (fractional coordinates, all
distances and angles unchanged), and any rotated copy ``L Rᵀ`` has the same ``S``. This is the
rotation-free representation of MatterGen (Zeni et al., Nature 2025, "symmetric lattice"), it keeps
exactly the six rotation-invariant degrees of freedom of the Gram matrix ``G = L Lᵀ = S²``, and,
unlike lattice parameters (a, b, c, α, β, γ), it is a linear space in which Gaussian noise and
the MatterGen mean-shift are meaningful. Symmetric noise ``ε`` has independent standard-normal
entries ``ε_ij = ε_ji`` (6 numbers).

**Forward process** (the seed, after MatterGen's Eq. for ``q(L_t|L_0)``):

.. math::  q(L_t | L_0) = \\mathcal N\\big(\\sqrt{ᾱ_t} L_0 + (1-\\sqrt{ᾱ_t}) μ(n) I,\\;
                                        (1-ᾱ_t) σ(n)^2 I\\big),
           \\qquad μ(n) = (n c)^{1/3},\\quad σ(n) = (n v)^{1/3},

with ``c`` the data's mean volume per atom (Å³/atom) and ``v`` the volume scale of the noise. The
seed writes ``σ_T^2(n) = (n v)^{1/3}`` but states ``SNR = |μ(n)|/σ(n) = (c/v)^{1/3}``; only
``σ(n) = (n v)^{1/3}`` makes that ratio independent of ``n``, so that is what is implemented, and
``v`` defaults to the data's mean cell volume as the seed says (``v`` configurable). In the
normalised variable ``Z = (L − μ(n) I)/σ(n)`` the process is the standard DDPM
``Z_t = √ᾱ_t Z_0 + √(1−ᾱ_t) ε`` (Ho et al., NeurIPS 2020, Eq. 4), whose posterior between steps
``s < t`` is used for ancestral sampling (their Eqs. 6–7).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["symmetric_lattice", "mu", "sigma", "snr", "sym_normal", "sample", "prior_sample",
           "to_normalised", "from_normalised", "posterior_step"]


def symmetric_lattice(lattice):
    """Symmetric polar factor ``S = (L Lᵀ)^{1/2}`` ``[..., 3, 3]`` (rotation-free; see module docstring).

    Differentiable (eigendecomposition of the Gram matrix; distinct eigenvalues assumed for the
    gradient, which holds except on a measure-zero set).
    """
    L = jnp.asarray(lattice)
    G = L @ jnp.swapaxes(L, -1, -2)
    w, V = jnp.linalg.eigh(G)
    return (V * jnp.sqrt(jnp.clip(w, 0.0))[..., None, :]) @ jnp.swapaxes(V, -1, -2)


def mu(n, c):
    """Limit mean ``μ(n) = (n c)^{1/3}`` [Å] (``c``: mean volume per atom, Å³)."""
    return (jnp.asarray(n, jnp.result_type(float)) * c) ** (1.0 / 3.0)


def sigma(n, v):
    """Limit width ``σ(n) = (n v)^{1/3}`` [Å] (module docstring)."""
    return (jnp.asarray(n, jnp.result_type(float)) * v) ** (1.0 / 3.0)


def snr(n, c, v):
    """Signal-to-noise ratio of the prior ``|μ(n)|/σ(n)`` (equals ``(c/v)^{1/3}`` for every n)."""
    return mu(n, c) / sigma(n, v)


def sym_normal(key, shape=(), dtype=jnp.float64):
    """Symmetric ``[..., 3, 3]`` noise with independent standard-normal ``ε_ij = ε_ji``."""
    g = jax.random.normal(key, tuple(shape) + (3, 3), dtype)
    up = jnp.triu(g)
    return up + jnp.swapaxes(jnp.triu(g, 1), -1, -2)


def to_normalised(L, n, c, v):
    """``Z = (L − μ(n) I)/σ(n)``."""
    n = jnp.asarray(n)[..., None, None]
    return (L - mu(n, c) * jnp.eye(3, dtype=L.dtype)) / sigma(n, v)


def from_normalised(Z, n, c, v):
    """Inverse of :func:`to_normalised`."""
    n = jnp.asarray(n)[..., None, None]
    return Z * sigma(n, v) + mu(n, c) * jnp.eye(3, dtype=Z.dtype)


def sample(key, L0, alpha_bar, n, c, v):
    """Draw ``L_t ∼ q(L_t | L_0)``; returns ``(L_t, ε)`` (``ε`` symmetric standard normal).

    Args:
        L0: ``[..., 3, 3]`` symmetric lattices [Å]. alpha_bar: ``ᾱ_t`` ``[...]``. n: atom counts ``[...]``.
    """
    eps = sym_normal(key, jnp.shape(L0)[:-2], L0.dtype)
    ab = jnp.asarray(alpha_bar, L0.dtype)[..., None, None]
    Z0 = to_normalised(L0, n, c, v)
    Zt = jnp.sqrt(ab) * Z0 + jnp.sqrt(1 - ab) * eps
    return from_normalised(Zt, n, c, v), eps


def prior_sample(key, n, c, v, dtype=jnp.float64):
    """Draw ``L_T ∼ N(μ(n) I, σ(n)² I)`` for atom counts ``n`` ``[...]``."""
    eps = sym_normal(key, jnp.shape(n), dtype)
    return from_normalised(eps, n, c, v)


def predict_clean(L_t, eps_hat, ab_t, n, c, v, clip: float | None = None):
    """``Ẑ_0 = (Z_t − √(1−ᾱ_t) ε̂)/√ᾱ_t`` (normalised units), optionally clipped to ``[−clip, clip]``."""
    Zt = to_normalised(L_t, n, c, v)
    ab_t = jnp.asarray(ab_t, L_t.dtype)[..., None, None]
    Z0 = (Zt - jnp.sqrt(1 - ab_t) * eps_hat) / jnp.sqrt(ab_t)
    return Z0 if clip is None else jnp.clip(Z0, -clip, clip)


def posterior_step(key, L_t, eps_hat, ab_t, ab_s, n, c, v, noise: bool = True, clip: float | None = None):
    """DDPM ancestral step ``L_s ∼ q(L_s | L_t, L̂_0)`` with ``L̂_0`` from the predicted noise.

    ``Ẑ_0 = (Z_t − √(1−ᾱ_t) ε̂)/√ᾱ_t``; mean ``= √ᾱ_s β/(1−ᾱ_t) Ẑ_0 + √α (1−ᾱ_s)/(1−ᾱ_t) Z_t``,
    variance ``β (1−ᾱ_s)/(1−ᾱ_t)`` with ``α = ᾱ_t/ᾱ_s``, ``β = 1 − α`` (Ho et al. 2020, Eq. 7).
    ``clip`` bounds ``Ẑ_0`` (the "clipped denoised" prediction of Ho et al.'s sampler): at large ``t``
    the ``1/√ᾱ_t`` factor amplifies network errors, and the clean lattice is known to lie in a small
    region of the normalised space (:attr:`DiffusionSpec.z_clip`).
    """
    Zt = to_normalised(L_t, n, c, v)
    ab_t = jnp.asarray(ab_t, L_t.dtype)[..., None, None]
    ab_s = jnp.asarray(ab_s, L_t.dtype)[..., None, None]
    Z0 = (Zt - jnp.sqrt(1 - ab_t) * eps_hat) / jnp.sqrt(ab_t)
    if clip is not None:
        Z0 = jnp.clip(Z0, -clip, clip)
    a = ab_t / ab_s
    b = 1 - a
    mean = jnp.sqrt(ab_s) * b / (1 - ab_t) * Z0 + jnp.sqrt(a) * (1 - ab_s) / (1 - ab_t) * Zt
    var = b * (1 - ab_s) / (1 - ab_t)
    z = sym_normal(key, jnp.shape(L_t)[:-2], L_t.dtype) if noise else 0.0
    return from_normalised(mean + jnp.sqrt(var) * z, n, c, v)
