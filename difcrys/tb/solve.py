"""Generalized eigenproblems ``H(k) c = ε S(k) c``: dense (JAX) and sparse shift-invert (SciPy).

Dense: ``S = U diag(s) U^†`` (eigh), ``X = U diag(s^{-1/2})``, then ``X^† H X y = ε y`` — the
Löwdin reduction (P.-O. Löwdin, J. Chem. Phys. 18, 365 (1950)); the smallest overlap eigenvalue
is returned alongside so that the host wrapper can refuse an S that is not positive definite or
too ill-conditioned (:class:`difcrys.tb.operators.OverlapError`). Differentiable through
``jnp.linalg.eigh`` for non-degenerate levels.

Sparse: for large systems (10^4 atoms and more) only the eigenvalues nearest an energy σ
(usually the Fermi level) are computed with ARPACK in shift-invert mode on the sparse
``(H − σS)^{-1} S`` (``scipy.sparse.linalg.eigsh(H, M=S, sigma=σ)``; R. B. Lehoucq,
D. C. Sorensen, C. Yang, ARPACK Users' Guide, SIAM (1998), §4.3), with one sparse LU of
``H − σS``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.errors import ConfigError, ConvergenceError
from difcrys.tb.operators import OverlapError, TBOperator

__all__ = ["generalized_eigh", "generalized_eigvalsh", "eigenvalues", "band_structure", "fermi_level", "dos", "eigs_near",
           "S_MIN_DEFAULT"]

S_MIN_DEFAULT = 1e-6  # smallest accepted overlap eigenvalue (relative to the largest)


@jax.jit
def generalized_eigh(Hk, Sk):
    """Eigenpairs of ``H c = ε S c`` by Löwdin orthogonalisation.

    Args:
        Hk, Sk: ``[..., N, N]`` Hermitian matrices (S positive definite).

    Returns:
        ``(eps [..., N] ascending, C [..., N, N] S-orthonormal columns, s_min [...] the smallest
        eigenvalue of S divided by its largest)``.
    """
    s, U = jnp.linalg.eigh(Sk)
    s_safe = jnp.where(s > 0, s, 1.0)
    X = U * (1.0 / jnp.sqrt(s_safe))[..., None, :]
    Xh = jnp.conj(jnp.swapaxes(X, -1, -2))
    A = Xh @ Hk @ X
    A = 0.5 * (A + jnp.conj(jnp.swapaxes(A, -1, -2)))
    eps, Y = jnp.linalg.eigh(A)
    return eps, X @ Y, s[..., 0] / s[..., -1]


@jax.custom_jvp
def generalized_eigvalsh(Hk, Sk):
    """Eigenvalues ``[..., N]`` (ascending) of ``H c = ε S c``, differentiable with the
    Hellmann–Feynman derivative ``dε_n = Re c_n^† (dH − ε_n dS) c_n`` (``c_n`` S-orthonormal).

    Unlike differentiating through :func:`jax.numpy.linalg.eigh`, the derivative never divides by
    eigenvalue gaps, so (near-)degenerate levels give finite gradients (for exactly degenerate
    levels it is the derivative of the levels in the eigenvector basis the solver returned; sums
    over a degenerate group are exact). Used for band-energy losses.
    """
    return generalized_eigh(Hk, Sk)[0]


@generalized_eigvalsh.defjvp
def _generalized_eigvalsh_jvp(primals, tangents):
    Hk, Sk = primals
    dH, dS = tangents
    eps, C, _ = generalized_eigh(Hk, Sk)
    Ch = jnp.conj(jnp.swapaxes(C, -1, -2))
    dHn = jnp.real(jnp.einsum("...ni,...ij,...jn->...n", Ch, dH, C))
    dSn = jnp.real(jnp.einsum("...ni,...ij,...jn->...n", Ch, dS, C))
    return eps, dHn - eps * dSn


def _check_overlap(s_rel, s_min, kpts):
    s_rel = np.asarray(s_rel)
    bad = np.nonzero(~(s_rel > s_min))[0]
    if len(bad):
        b = int(bad[0])
        raise OverlapError(f"overlap matrix S(k) is not positive definite or ill-conditioned at k = "
                           f"{np.round(np.asarray(kpts)[b], 4).tolist()}: smallest/largest eigenvalue "
                           f"{float(s_rel[b]):.3g} (threshold {s_min:g}); check the overlap blocks and the "
                           "orbital basis (near-linear dependence)")


def eigenvalues(op: TBOperator, kpts, *, s_min: float = S_MIN_DEFAULT, chunk: int = 32,
                vectors: bool = False):
    """Band energies [eV] ``[K, N]`` at fractional ``kpts [K, 3]`` (dense, in chunks of k-points).

    Raises:
        OverlapError: S(k) not positive definite / smallest relative eigenvalue below ``s_min``.
    """
    kpts = np.atleast_2d(np.asarray(kpts, float))
    eps_all, vec_all = [], []
    chunk = min(chunk, len(kpts))
    for a in range(0, len(kpts), chunk):
        kk = kpts[a:a + chunk]
        m = len(kk)
        if m < chunk:  # pad to the compiled shape
            kk = np.concatenate([kk, np.repeat(kk[-1:], chunk - m, 0)])
        Hk, Sk = op.bloch(kk, "H"), op.bloch(kk, "S")
        eps, C, s_rel = generalized_eigh(Hk, Sk)
        _check_overlap(np.asarray(s_rel)[:m], s_min, kk[:m])
        eps_all.append(np.asarray(eps)[:m])
        if vectors:
            vec_all.append(np.asarray(C)[:m])
    eps = np.concatenate(eps_all)
    return (eps, np.concatenate(vec_all)) if vectors else eps


def fermi_level(eigs, n_electrons: float, weights=None, width: float = 0.0) -> float:
    """Fermi level [eV] for ``n_electrons`` per cell (spin-degenerate bands).

    ``width = 0``: midpoint between the highest occupied and lowest unoccupied level of the
    k-point set (equal weights); otherwise Fermi–Dirac occupations of width ``width`` [eV]
    solved by bisection.
    """
    e = np.asarray(eigs, float)
    K = e.shape[0]
    w = np.full(K, 1.0 / K) if weights is None else np.asarray(weights, float) / np.sum(weights)
    if width <= 0:
        flat = np.sort(e.reshape(-1))
        n_occ = n_electrons / 2 * K
        m = int(round(n_occ))
        if m <= 0 or m >= flat.size:
            raise ConfigError(f"{n_electrons} electrons do not fit the {e.shape[1]} bands")
        return float(0.5 * (flat[m - 1] + flat[m]))
    lo, hi = e.min() - 10 * width, e.max() + 10 * width
    for _ in range(200):
        mu = 0.5 * (lo + hi)
        x = np.clip((e - mu) / width, -200, 200)
        n = 2 * np.sum(w[:, None] / (1 + np.exp(x)))
        lo, hi = (mu, hi) if n < n_electrons else (lo, mu)
    return float(0.5 * (lo + hi))


def band_structure(op: TBOperator, npoints: int = 100, path: str | None = None, special_points=None,
                   s_min: float = S_MIN_DEFAULT) -> dict:
    """Bands [eV] along a high-symmetry path (:func:`difcrys.symmetry.band_path`).

    Returns:
        dict with ``kpts [K,3]``, ``x [K]``, ``label_x``, ``labels``, ``eigenvalues [K, N]`` [eV],
        ``path``.
    """
    from difcrys.symmetry import band_path

    bp = band_path(op.crystal, npoints=npoints, path=path, special_points=special_points)
    eig = eigenvalues(op, bp.kpts, s_min=s_min)
    return {"kpts": bp.kpts, "x": bp.x, "label_x": bp.special_x, "labels": bp.labels, "eigenvalues": eig,
            "path": bp.path}


def dos(op: TBOperator, mesh=(12, 12, 1), energies=None, method: str = "gaussian", width: float = 0.1,
        s_min: float = S_MIN_DEFAULT):
    """Density of states [states/eV/cell, spin-degenerate] on a Γ-centred ``mesh``.

    Gaussian broadening (``width`` [eV]) or the linear tetrahedron method; both reuse
    :mod:`difcrys.dft.bandstructure` (unit-agnostic formulas).
    """
    from difcrys.dft.bandstructure import dos_gaussian, dos_tetrahedron
    from difcrys.symmetry import monkhorst_pack

    mesh = tuple(int(m) for m in mesh)
    kpts = monkhorst_pack(mesh)
    eig = eigenvalues(op, kpts, s_min=s_min)
    if energies is None:
        energies = np.linspace(eig.min() - 1.0, eig.max() + 1.0, 800)
    energies = np.asarray(energies, float)
    if method == "gaussian":
        return energies, dos_gaussian(eig, np.full(len(kpts), 1.0 / len(kpts)), energies, width)
    if method == "tetrahedron":
        # dos_tetrahedron expects the grid in C order of (i, j, k) indices
        idx = np.round(np.mod(kpts, 1.0) * np.array(mesh)).astype(int) % np.array(mesh)
        order = np.argsort((idx[:, 0] * mesh[1] + idx[:, 1]) * mesh[2] + idx[:, 2])
        return energies, dos_tetrahedron(eig[order], mesh, energies)
    raise ConfigError(f"unknown DOS method {method!r}; choose gaussian or tetrahedron")


def eigs_near(op: TBOperator, sigma: float, n: int = 20, k=(0.0, 0.0, 0.0), tol: float = 0.0,
              maxiter: int | None = None) -> np.ndarray:
    """The ``n`` eigenvalues [eV] of ``H(k) c = ε S(k) c`` nearest ``sigma`` [eV] (sparse, shift-invert).

    Cost: one sparse LU of ``H − σS`` plus a few dozen solves; memory the LU fill-in.

    Raises:
        ConfigError: bad ``n``.
        OverlapError: ARPACK reports that S is not positive definite.
        ConvergenceError: ARPACK did not converge.
    """
    import scipy.sparse.linalg as sla

    H, S = op.sparse(k)
    N = H.shape[0]
    if not (0 < int(n) < N - 1):
        raise ConfigError(f"n must be between 1 and {N - 2}, got {n}")
    H = 0.5 * (H + H.getH())
    S = 0.5 * (S + S.getH())
    try:
        vals = sla.eigsh(H.tocsc(), k=int(n), M=S.tocsc(), sigma=float(sigma), which="LM", tol=tol,
                         maxiter=maxiter, return_eigenvectors=False)
    except sla.ArpackNoConvergence as e:
        raise ConvergenceError(f"shift-invert eigensolver did not converge ({len(e.eigenvalues)} of {n} "
                               "eigenvalues); increase maxiter") from None
    except sla.ArpackError as e:
        raise OverlapError(f"ARPACK failed ({e}); the overlap S may not be positive definite") from None
    return np.sort(np.real(vals))

