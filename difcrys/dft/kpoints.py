"""Monkhorst–Pack k-point grids reduced by the crystal's symmetry (host-side).

A symmetry ``x ↦ R x + t`` (fractional coordinates) maps the Bloch vector ``k``
(reciprocal fractional coordinates) to ``Rᵀ k``; time reversal maps ``k`` to ``−k``.
Only the operations that leave the grid invariant are used for the reduction, and
the *same* operations symmetrise the density (see
:func:`difcrys.dft.terms.symmetrize`), so the irreducible sum equals the full-grid
sum exactly.

Convention (ABINIT ``ngkpt``/``shiftk``, VASP): the grid points are
``k = (n + s)/N``, ``n = 0..N−1``, with the shift ``s`` in units of the grid spacing
(``s = 0.5`` gives the original Monkhorst–Pack grid for even N);
H. J. Monkhorst, J. D. Pack, Phys. Rev. B 13, 5188 (1976).
"""

from __future__ import annotations

import numpy as np

from difcrys.symmetry import monkhorst_pack  # the one Monkhorst–Pack grid of the project

__all__ = ["monkhorst_pack", "reduce_kpoints"]


def _key(k, mesh, shift):
    # integer label of a grid point: n = k N - s (mod N)
    n = np.rint(np.asarray(k) * mesh - shift).astype(int)
    return tuple(np.mod(n, mesh))


def reduce_kpoints(mesh, shift=(0, 0, 0), rotations=None, time_reversal: bool = True):
    """Irreducible k-points of a Monkhorst–Pack grid.

    Args:
        mesh: ``(N1, N2, N3)``.
        shift: grid shift in units of the spacing.
        rotations: ``[nsym, 3, 3]`` integer rotations of the crystal (fractional); None → identity.
        time_reversal: also use ``k → −k``.

    Returns:
        ``(kpts [nir, 3], weights [nir], used [nops] bool)`` where ``used`` marks the
        rotations that leave the grid invariant (to be used for density symmetrisation).
    """
    mesh = np.asarray(mesh, int).reshape(3)
    shift = np.asarray(shift, float).reshape(3)
    full = monkhorst_pack(mesh, shift)
    rots = np.eye(3, dtype=int)[None] if rotations is None else np.asarray(rotations, int)
    keys = {_key(k, mesh, shift): i for i, k in enumerate(full)}
    used = []
    for R in rots:
        ok = all(_is_grid_point(R.T @ k, mesh, shift) for k in full)
        used.append(ok)
    used = np.array(used)
    ops = [R.T for R, u in zip(rots, used) if u]
    seen = np.full(len(full), -1)
    irr, weights = [], []
    for i, k in enumerate(full):
        if seen[i] >= 0:
            continue
        orbit = set()
        for RT in ops:
            for sgn in ((1, -1) if time_reversal else (1,)):
                kk = sgn * (RT @ k)
                if _is_grid_point(kk, mesh, shift):
                    orbit.add(keys[_key(kk, mesh, shift)])
        for j in orbit:
            seen[j] = len(irr)
        irr.append(k)
        weights.append(len(orbit))
    w = np.array(weights, float)
    return np.array(irr), w / w.sum(), used


def _is_grid_point(k, mesh, shift) -> bool:
    n = np.asarray(k) * mesh - shift
    return bool(np.all(np.abs(n - np.rint(n)) < 1e-6))
