"""Ewald summation of the ion–ion energy for point charges in a neutralising background.

``E = ½ Σ_{a,b} Σ'_R Z_a Z_b erfc(η|x_ab+R|)/|x_ab+R| + (2π/Ω) Σ_{G≠0} e^{−G²/4η²}/G² |S(G)|²
− (η/√π) Σ_a Z_a² − π (Σ_a Z_a)² / (2Ω η²)``, ``S(G) = Σ_a Z_a e^{iG·x_a}``.

Pure JAX, differentiable w.r.t. fractional positions and the lattice (forces and
stress); the summation ranges are static integers chosen on the host
(:func:`ewald_setup`). Hartree atomic units (Bohr, Ha).

Reference: P. P. Ewald, Ann. Phys. 369, 253 (1921); the form above is that of
M. P. Allen & D. J. Tildesley, Computer Simulation of Liquids (2nd ed.), §6.2.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

_TOL = 36.0  # exp(-36) ~ 2e-16: both sums are truncated where terms fall below this


@dataclasses.dataclass(frozen=True)
class EwaldSetup:
    eta: float
    rshifts: np.ndarray  # [nR, 3] integer lattice translations
    gmillers: np.ndarray  # [nG, 3] integer reciprocal vectors (G ≠ 0, half-space not used)


def ewald_setup(lattice_bohr, margin: float = 1.15) -> EwaldSetup:
    """Choose η and the (static) real/reciprocal summation ranges for a lattice [Bohr]."""
    L = np.asarray(lattice_bohr, float)
    vol = abs(np.linalg.det(L))
    eta = np.sqrt(np.pi) / vol ** (1.0 / 3.0) * 1.2
    rmax = np.sqrt(_TOL) / eta * margin + np.max(np.linalg.norm(L, axis=1))
    gmax = 2 * eta * np.sqrt(_TOL) * margin
    inv = np.linalg.inv(L)
    heights = 1.0 / np.linalg.norm(inv, axis=0)  # interplanar spacings
    nr = np.ceil(rmax / heights).astype(int)
    B = 2 * np.pi * inv.T
    bh = 2 * np.pi / np.linalg.norm(L, axis=1)  # reciprocal plane spacings
    ng = np.ceil(gmax / bh).astype(int)
    grid = lambda n: np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in n], indexing="ij"), -1).reshape(-1, 3)
    R = grid(nr)
    R = R[np.linalg.norm(R @ L, axis=1) <= rmax]
    G = grid(ng)
    gn = np.linalg.norm(G @ B, axis=1)
    G = G[(gn <= gmax) & (gn > 0)]
    return EwaldSetup(float(eta), R.astype(np.int32), G.astype(np.int32))


def ewald_energy(lattice, frac, charges, setup: EwaldSetup):
    """Ewald energy [Ha] of point charges ``charges [n]`` at ``frac [n,3]`` in ``lattice [3,3]`` (Bohr, rows)."""
    from jax.scipy.special import erfc

    eta = setup.eta
    vol = jnp.abs(jnp.linalg.det(lattice))
    # real space
    d = frac[:, None, None, :] - frac[None, :, None, :] + jnp.asarray(setup.rshifts, frac.dtype)[None, None]
    r_vec = d @ lattice
    r2 = jnp.sum(r_vec**2, -1)
    self_term = r2 < 1e-20
    r = jnp.sqrt(jnp.where(self_term, 1.0, r2))
    zz = charges[:, None, None] * charges[None, :, None]
    e_real = 0.5 * jnp.sum(jnp.where(self_term, 0.0, zz * erfc(eta * r) / r))
    # reciprocal space
    B = 2 * jnp.pi * jnp.linalg.inv(lattice).T
    G = jnp.asarray(setup.gmillers, lattice.dtype) @ B
    g2 = jnp.sum(G**2, -1)
    phase = 2 * jnp.pi * (jnp.asarray(setup.gmillers, frac.dtype) @ frac.T)  # [nG, n]
    s_re = jnp.sum(charges * jnp.cos(phase), -1)
    s_im = jnp.sum(charges * jnp.sin(phase), -1)
    e_recip = 2 * jnp.pi / vol * jnp.sum(jnp.exp(-g2 / (4 * eta**2)) / g2 * (s_re**2 + s_im**2))
    e_self = -eta / jnp.sqrt(jnp.pi) * jnp.sum(charges**2)
    e_bg = -jnp.pi * jnp.sum(charges) ** 2 / (2 * vol * eta**2)
    return e_real + e_recip + e_self + e_bg
