"""Symmetry-adapted parameters of a crystal (host-side, spglib): only symmetry-free ones refine.

Given the space-group operations ``{(W, w)}`` of a crystal in its own (input)
fractional basis (spglib), this builds linear maps from a small free-parameter
vector to the full structure so that every parameter update keeps the symmetry:

* **Metric.** ``G = L Lᵀ`` must obey ``Wᵀ G W = G`` for every rotation. The
  invariant symmetric matrices form a linear subspace with basis ``E_k``
  (1 parameter for cubic, 2 tetragonal/hexagonal, 3 orthorhombic, 4 monoclinic,
  6 triclinic); ``G = Σ p_k E_k`` and the lattice is its Cholesky factor (a
  rotation of the input cell; XRD depends on the metric only).
* **Positions.** For each Wyckoff orbit with representative ``x_r``, the site-
  symmetry group ``{(W, w): W x_r + w ≡ x_r}`` leaves free the displacements
  ``δ`` with ``W δ = δ`` (null space of the stacked ``W - I``), basis ``U_r``.
  Each orbit member ``j = (W_j, w_j) r`` moves as ``x_j = x_j⁰ + W_j U_r q_r``.
* **B factors.** One isotropic B per orbit.

Overlapping atoms of a disordered (mixed) site are treated as one site whose
"type" is its composition.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from difcrys.crystal import Crystal
from difcrys.errors import StructureError

_SYM_BASIS = []
for _i, _j in ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)):
    _e = np.zeros((3, 3))
    _e[_i, _j] = _e[_j, _i] = 1.0
    _SYM_BASIS.append(_e)
_SYM_BASIS = np.array(_SYM_BASIS)


def _null_space(A: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    if A.size == 0:
        return np.eye(A.shape[1])
    _, s, vt = np.linalg.svd(A)
    rank = int(np.sum(s > tol * max(1.0, s.max() if s.size else 1.0)))
    return vt[rank:].T


def _clean_basis(N: np.ndarray) -> np.ndarray:
    """Rotate a null-space basis to a sparse, readable one (reduced row echelon form)."""
    if N.shape[1] == 0:
        return N
    M = N.T.copy()  # [k, d]
    r = 0
    for c in range(M.shape[1]):
        piv = np.argmax(np.abs(M[r:, c])) + r if r < M.shape[0] else None
        if piv is None or abs(M[piv, c]) < 1e-10:
            continue
        M[[r, piv]] = M[[piv, r]]
        M[r] /= M[r, c]
        for i in range(M.shape[0]):
            if i != r:
                M[i] -= M[i, c] * M[r]
        r += 1
        if r == M.shape[0]:
            break
    M[np.abs(M) < 1e-12] = 0.0
    return M.T


@dataclasses.dataclass
class SymmetryParams:
    """Linear symmetry-adapted parametrisation of one crystal.

    Attributes:
        spacegroup: Hermann–Mauguin symbol; number: ITA number.
        metric_basis: ``[k, 3, 3]`` basis E of invariant metrics; p0 ``[k]``: initial metric params.
        frac0: ``[n, 3]`` symmetrised initial fractional coordinates.
        pos_basis: ``[n, 3, q]`` displacement of each atom per free coordinate.
        q_labels: ``[q]`` human labels like ``"O1.x"``.
        orbit: ``[n]`` orbit (Wyckoff set) index of each atom; n_orbits.
        orbit_labels: label of each orbit (element + index).
    """

    spacegroup: str
    number: int
    metric_basis: np.ndarray
    p0: np.ndarray
    frac0: np.ndarray
    pos_basis: np.ndarray
    q_labels: list
    orbit: np.ndarray
    n_orbits: int
    orbit_labels: list

    @property
    def n_metric(self) -> int:
        return self.metric_basis.shape[0]

    @property
    def n_free_coords(self) -> int:
        return self.pos_basis.shape[2]


def _p1(crystal: Crystal) -> SymmetryParams:
    c = crystal.unpadded()
    n = c.n_atoms
    lat = np.asarray(c.lattice, float)
    G = lat @ lat.T
    p0 = np.array([G[i, j] for i, j in ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))])
    pos = np.zeros((n, 3, 3 * n))
    labels = []
    syms = c.symbols
    for i in range(n):
        pos[i, :, 3 * i:3 * i + 3] = np.eye(3)
        labels += [f"{syms[i]}{i}.{a}" for a in "xyz"]
    return SymmetryParams("P1", 1, _SYM_BASIS.copy(), p0, np.asarray(c.frac, float), pos, labels,
                          np.arange(n), n, [f"{syms[i]}{i}" for i in range(n)])


def symmetry_params(crystal: Crystal, occupancy=None, symprec: float = 1e-3, use_symmetry: bool = True
                    ) -> SymmetryParams:
    """Symmetry-free parameters of a crystal (see module docstring).

    Args:
        crystal: single crystal (padding removed internally).
        occupancy: ``[n]`` occupancies; atoms sharing a position with different
            species form one mixed site.
        symprec: spglib tolerance [Å].
        use_symmetry: False gives the P1 parametrisation (every coordinate free).

    Raises:
        StructureError: spglib fails on the structure.
    """
    import spglib

    c = crystal.unpadded()
    if not use_symmetry:
        return _p1(c)
    lat = np.asarray(c.lattice, float)
    frac = np.asarray(c.frac, float) % 1.0
    nums = np.asarray(c.numbers)
    n = len(nums)
    occ = np.ones(n) if occupancy is None else np.asarray(occupancy, float)[: n]
    # merge atoms at the same position into sites typed by composition
    site_of = -np.ones(n, int)
    sites: list[list[int]] = []
    for i in range(n):
        if site_of[i] >= 0:
            continue
        site_of[i] = len(sites)
        members = [i]
        for j in range(i + 1, n):
            d = frac[j] - frac[i]
            d -= np.round(d)
            if site_of[j] < 0 and np.linalg.norm(d @ lat) < 1e-3:
                site_of[j] = len(sites)
                members.append(j)
        sites.append(members)
    comp_types: dict[tuple, int] = {}
    types = []
    for m in sites:
        key = tuple(sorted((int(nums[k]), round(float(occ[k]), 6)) for k in m))
        types.append(comp_types.setdefault(key, len(comp_types) + 1))
    sfrac = np.array([frac[m[0]] for m in sites])
    ds = spglib.get_symmetry_dataset((lat, sfrac, np.array(types)), symprec=symprec)
    if ds is None:
        raise StructureError(f"spglib could not determine the space group: {spglib.get_error_message()}")
    R = np.asarray(ds.rotations)
    T = np.asarray(ds.translations)
    # metric basis
    A = np.concatenate([np.stack([(W.T @ E @ W - E).ravel() for E in _SYM_BASIS], axis=1) for W in R], axis=0)
    N = _clean_basis(_null_space(A))  # [6, k]
    Eb = np.einsum("ik,ijl->kjl", N, _SYM_BASIS)
    G0 = lat @ lat.T
    p0 = np.linalg.lstsq(Eb.reshape(len(Eb), -1).T, G0.ravel(), rcond=None)[0]
    # orbits over sites
    equiv = np.asarray(ds.equivalent_atoms)
    ns = len(sites)
    sfrac_sym = sfrac.copy()
    site_basis: dict[int, np.ndarray] = {}
    site_op: dict[int, tuple] = {}

    def same(x, y):
        d = x - y
        d -= np.round(d)
        return np.linalg.norm(d @ lat) < max(10 * symprec, 1e-3)

    reps = sorted(set(equiv.tolist()))
    for r in reps:
        xr = sfrac[r]
        stab = [(W, t) for W, t in zip(R, T) if same(W @ xr + t, xr)]
        # symmetrise the representative over its site-symmetry group
        acc = np.zeros(3)
        for W, t in stab:
            y = W @ xr + t
            acc += y - np.round(y - xr)
        xr = acc / len(stab)
        sfrac_sym[r] = xr
        U = _clean_basis(_null_space(np.concatenate([W - np.eye(3) for W, _ in stab], axis=0)))
        site_basis[r] = U
        for j in np.where(equiv == r)[0]:
            for W, t in zip(R, T):
                y = W @ xr + t
                if same(y, sfrac[j]):
                    shift = np.round(sfrac[j] - y)
                    site_op[j] = (W, t + shift)
                    sfrac_sym[j] = y + shift
                    break
            else:
                raise StructureError(f"symmetry analysis failed: no operation maps site {r} onto {j}")
    # free coordinates
    q_index: dict[int, slice] = {}
    q_labels: list[str] = []
    orbit_labels: list[str] = []
    from difcrys.crystal import chemical_symbol

    nq = 0
    for oi, r in enumerate(reps):
        el = "".join(chemical_symbol(int(nums[k])) for k in sites[r])
        orbit_labels.append(f"{el}{oi}")
        d = site_basis[r].shape[1]
        q_index[r] = slice(nq, nq + d)
        for k in range(d):
            vec = site_basis[r][:, k]
            axes = "".join(a for a, v in zip("xyz", vec) if abs(v) > 1e-9)
            q_labels.append(f"{el}{oi}.{axes}")
        nq += d
    pos_site = np.zeros((ns, 3, nq))
    for j in range(ns):
        r = int(equiv[j])
        W, _ = site_op[j]
        pos_site[j][:, q_index[r]] = W @ site_basis[r]
    orbit_site = np.array([reps.index(int(equiv[j])) for j in range(ns)])
    frac0 = np.array([sfrac_sym[site_of[i]] for i in range(n)])
    # keep each atom's coordinates near its input values (no wrapping jumps)
    frac0 = frac0 + np.round(np.asarray(c.frac, float) - frac0)
    return SymmetryParams(
        spacegroup=str(ds.international), number=int(ds.number), metric_basis=Eb, p0=p0, frac0=frac0,
        pos_basis=np.array([pos_site[site_of[i]] for i in range(n)]), q_labels=q_labels,
        orbit=np.array([orbit_site[site_of[i]] for i in range(n)]), n_orbits=len(reps), orbit_labels=orbit_labels)


def lattice_from_metric(G):
    """Lattice rows (lower-triangular Cholesky factor, ``L Lᵀ = G``) [Å]; differentiable (JAX)."""
    import jax.numpy as jnp

    G = 0.5 * (G + jnp.swapaxes(G, -1, -2))
    return jnp.linalg.cholesky(G)
