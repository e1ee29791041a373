"""Forces and stress of a converged Kohn–Sham state by automatic differentiation.

Hellmann–Feynman: at self-consistency the energy is stationary in the orbitals
and occupations, so ``F = −∂E/∂R`` and ``σ = Ω⁻¹ ∂E/∂ε`` are derivatives of
:func:`difcrys.dft.terms.total_energy` at *fixed* plane-wave coefficients and
occupations (fixed basis: Miller indices do not change with strain, as ABINIT
with ``ecutsm = 0``). No derivative through the SCF iterations is taken.

Units: :func:`forces` returns eV/Å and :func:`stress` GPa (``*_au`` variants:
Ha/Bohr and Ha/Bohr³). Stress sign: ``σ = Ω⁻¹ ∂E/∂ε`` (ABINIT's and ASE's convention): a negative diagonal
means the energy falls when the cell expands; the pressure is ``P = −Tr σ / 3``.
"""

from __future__ import annotations

import weakref

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.dft import terms as T
from difcrys.units import HA_PER_BOHR3_GPA, HA_PER_BOHR_EV_PER_ANG


def _energy(setup, lattice, frac, params, coeffs, occ):
    return T.total_energy(setup, lattice, frac, params["psp"], params["xc"], coeffs, occ)


def _cartesian_ops(setup, lattice, frac):
    """Cartesian rotations ``[nsym,3,3]`` and atom permutations ``[nsym,n]`` of the symmetry operations."""
    if setup.symops is None:
        return None, None
    L = np.asarray(lattice)
    x = np.asarray(frac)
    rots, trans = setup.symops
    Rc, perms = [], []
    for R, t in zip(rots, trans):
        Rc.append(L.T @ R @ np.linalg.inv(L.T))
        y = x @ R.T + t  # image of each atom
        d = y[:, None, :] - x[None, :, :]
        d -= np.round(d)
        match = np.linalg.norm(d @ L, axis=-1) < 1e-3
        if not np.all(match.sum(1) == 1):
            return None, None  # positions no longer symmetric: no symmetrisation
        perms.append(np.argmax(match, axis=1))
    return np.array(Rc), np.array(perms)


def symmetrize_forces(setup, lattice, frac, f):
    """``F_sym[S(a)] = 1/N_S Σ_S R_S F[a]`` (needed with irreducible k-points, as ABINIT does)."""
    Rc, perms = _cartesian_ops(setup, lattice, frac)
    if Rc is None:
        return f
    out = jnp.zeros_like(f)
    for R, perm in zip(Rc, perms):
        out = out.at[perm].add(f @ jnp.asarray(R).T)
    return out / len(Rc)


def symmetrize_stress(setup, lattice, frac, s):
    Rc, _ = _cartesian_ops(setup, lattice, frac)
    if Rc is None:
        return s
    Rc = jnp.asarray(Rc)
    return jnp.mean(jnp.einsum("sij,jk,slk->sil", Rc, s, Rc), 0)


_GRADS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _grad_fns(setup):
    """Jitted ``∂E/∂frac``, ``∂E/∂ε`` and both at once for a setup, cached (relaxations call them
    every step). All three differentiate one function, ``E(frac, L (I + ε))`` at ``ε = 0``."""
    if setup not in _GRADS:
        def e(frac, eps, params, coeffs, occ):
            eps = 0.5 * (eps + eps.T)
            return _energy(setup, params["lattice"] @ (jnp.eye(3) + eps), frac, params, coeffs, occ)

        _GRADS[setup] = tuple(jax.jit(jax.grad(e, argnums=a)) for a in (0, 1, (0, 1)))
    return _GRADS[setup]


def _grads(res, which):
    """``∂E/∂frac`` (0), ``∂E/∂ε`` (1) or both (2) at the converged state of ``res``."""
    p = res.params
    return _grad_fns(res.setup)[which](p["frac"], jnp.zeros((3, 3)), p, res.coeffs, jnp.asarray(res.occupations))


def _raw_forces_from(res, g_frac):
    return -g_frac @ jnp.linalg.inv(res.params["lattice"]).T


def _forces_from(res, g_frac):
    p = res.params
    f = symmetrize_forces(res.setup, p["lattice"], p["frac"], _raw_forces_from(res, g_frac))
    return f - jnp.mean(f, 0)


def _stress_from(res, g_eps):
    p = res.params
    return symmetrize_stress(res.setup, p["lattice"], p["frac"], g_eps / T.volume(p["lattice"]))


def raw_forces_au(res):
    """``−∂E/∂R`` [Ha/Bohr] of the discretised energy, without symmetrisation or mean removal.

    This is what central finite differences of the total energy measure (when the
    k-point set is not symmetry-reduced).
    """
    return _raw_forces_from(res, _grads(res, 0))


def forces_au(res):
    """Cartesian forces ``[n, 3]`` [Ha/Bohr]: symmetrised, with the mean (grid "egg-box") force removed.

    The XC energy on a finite FFT grid is not exactly translation invariant, so the raw
    forces have a tiny net force; ABINIT removes it the same way.
    """
    return _forces_from(res, _grads(res, 0))


def stress_au(res):
    """Stress tensor ``[3, 3]`` [Ha/Bohr³], ``σ = Ω⁻¹ ∂E/∂ε`` with ``L' = L (I + ε)``."""
    return _stress_from(res, _grads(res, 1))


def forces_and_stress_au(res):
    """:func:`forces_au` and :func:`stress_au` from one backward pass (one compilation instead of two)."""
    g_frac, g_eps = _grads(res, 2)
    return _forces_from(res, g_frac), _stress_from(res, g_eps)


def forces_and_stress(res):
    """Forces ``[n, 3]`` [eV/Å] and stress ``[3, 3]`` [GPa] from one backward pass."""
    f, s = forces_and_stress_au(res)
    return f * HA_PER_BOHR_EV_PER_ANG, s * HA_PER_BOHR3_GPA


def forces(res):
    """Cartesian forces ``[n, 3]`` [eV/Å]."""
    return forces_au(res) * HA_PER_BOHR_EV_PER_ANG


def stress(res):
    """Stress ``[3, 3]`` [GPa] (``σ = Ω⁻¹ ∂E/∂ε``)."""
    return stress_au(res) * HA_PER_BOHR3_GPA
