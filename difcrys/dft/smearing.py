"""Occupation smearing and the Fermi level (Hartree atomic units).

With ``x = (ε − μ)/σ`` each scheme gives an occupation ``f(x)`` (per spin, in
[0, 1]) and an entropy-like function ``s(x) = ∫_{-∞}^x y f'(y) dy`` such that the
free energy ``F = E − σ Σ_nk w_k 2 s(x_nk)`` is variational in the occupations.

* ``fermi-dirac``: f = 1/(1+eˣ), s = −f ln f − (1−f) ln(1−f).
* ``gaussian``: f = ½ erfc(x), s = e^{−x²}/(2√π)  (ABINIT occopt 7).
* ``cold`` (Marzari–Vanderbilt): v = x + 1/√2, f = ½ erfc(v) + e^{−v²}/√(2π),
  s = v e^{−v²}/√(2π). N. Marzari, D. Vanderbilt, A. De Vita, M. C. Payne,
  Phys. Rev. Lett. 82, 3296 (1999).
* ``cold-a`` (Marzari's cold smearing with an asymmetry parameter, ABINIT occopt 4,
  ``a = −0.5634``): with ``u = −x``, ``δ(u) = e^{−u²}/√π (3/2 − (3a/2)u − u² + a u³)``,
  ``f = ½(1 + erf u) + e^{−u²}/√π (a/4 + u/2 − a u²/2)``,
  ``s = e^{−u²}/√π (1/4 − u²/2 + a u³/2)`` (integrated here from δ; N. Marzari, PhD
  thesis, Cambridge (1996); ABINIT documentation of ``occopt``).
* ``none``: insulator occupations (the lowest N_el/2 bands doubly occupied).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import erfc

SMEARINGS = ("none", "fermi-dirac", "gaussian", "cold", "cold-a")
COLD_A = -0.5634


def occupation(kind: str, x):
    if kind == "fermi-dirac":
        return jax.nn.sigmoid(-x)
    if kind == "gaussian":
        return 0.5 * erfc(x)
    if kind == "cold":
        v = x + 1 / jnp.sqrt(2.0)
        return 0.5 * erfc(v) + jnp.exp(-v * v) / jnp.sqrt(2 * jnp.pi)
    if kind == "cold-a":
        u = -x
        a = COLD_A
        return 0.5 * (1 + jax.scipy.special.erf(u)) + jnp.exp(-u * u) / jnp.sqrt(jnp.pi) * (a / 4 + u / 2 - a * u * u / 2)
    raise ValueError(f"unknown smearing {kind!r}")


def entropy(kind: str, x):
    if kind == "fermi-dirac":
        f = jax.nn.sigmoid(-x)
        # -f ln f - (1-f) ln(1-f), written stably via softplus
        return jax.nn.softplus(-jnp.abs(x)) + jnp.abs(x) * jax.nn.sigmoid(-jnp.abs(x))
    if kind == "gaussian":
        return jnp.exp(-x * x) / (2 * jnp.sqrt(jnp.pi))
    if kind == "cold":
        v = x + 1 / jnp.sqrt(2.0)
        return v * jnp.exp(-v * v) / jnp.sqrt(2 * jnp.pi)
    if kind == "cold-a":
        u = -x
        a = COLD_A
        return jnp.exp(-u * u) / jnp.sqrt(jnp.pi) * (0.25 - u * u / 2 + a * u**3 / 2)
    raise ValueError(f"unknown smearing {kind!r}")


def fermi_level(kind: str, width, eigenvalues, weights, n_electrons, n_iter: int = 200):
    """Fermi level μ [Ha] such that ``Σ_k w_k Σ_n 2 f((ε_nk − μ)/σ) = N_el``, by bisection.

    Args:
        kind: smearing kind (not ``none``).
        width: σ [Ha].
        eigenvalues: ``[nk, nb]`` [Ha].
        weights: ``[nk]`` k-point weights summing to 1.
        n_electrons: number of valence electrons.
    """
    lo = jnp.min(eigenvalues) - 50 * width - 1.0
    hi = jnp.max(eigenvalues) + 50 * width + 1.0

    def count(mu):
        return jnp.sum(weights[:, None] * 2 * occupation(kind, (eigenvalues - mu) / width))

    def body(_, lh):
        lo, hi = lh
        mid = 0.5 * (lo + hi)
        too_many = count(mid) > n_electrons
        return jnp.where(too_many, lo, mid), jnp.where(too_many, mid, hi)

    lo, hi = jax.lax.fori_loop(0, n_iter, body, (lo, hi))
    return jax.lax.stop_gradient(0.5 * (lo + hi))


def occupations(kind: str, width, eigenvalues, weights, n_electrons):
    """Occupations ``[nk, nb]`` in [0, 2], Fermi level [Ha] and the entropy term ``−σS`` [Ha]."""
    if kind == "none":
        nocc = int(round(n_electrons)) // 2
        nb = eigenvalues.shape[-1]
        occ = jnp.where(jnp.arange(nb) < nocc, 2.0, 0.0) * jnp.ones_like(eigenvalues)
        homo = jnp.max(eigenvalues[:, nocc - 1])
        return occ, homo, jnp.zeros((), eigenvalues.dtype)
    mu = fermi_level(kind, width, eigenvalues, weights, n_electrons)
    x = (eigenvalues - mu) / width
    occ = 2 * occupation(kind, x)
    ts = -width * jnp.sum(weights[:, None] * 2 * entropy(kind, x))
    return occ, mu, ts
