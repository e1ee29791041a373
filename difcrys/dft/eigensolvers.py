"""Eigensolvers for the Kohn–Sham Hamiltonian behind one interface.

``solve(setup, lattice, frac, psp, veff_r, X0) -> (eigenvalues [nk, nb], coeffs [nk, nb, npw])``
returns the lowest ``nb = setup.n_bands`` eigenpairs at every k-point (batched with
``vmap``):

* ``dense``: builds ``H_k`` and calls ``eigh`` — exact, O(npw³), for small bases;
* ``lobpcg``: matrix-free preconditioned block LOBPCG (A. V. Knyazev, SIAM J. Sci.
  Comput. 23, 517 (2001)) with the Teter–Payne–Allan kinetic preconditioner
  (M. P. Teter, M. C. Payne, D. C. Allan, Phys. Rev. B 40, 12255 (1989)), warm-started
  from the previous SCF step's vectors ``X0``, iterated to an SCF-driven residual target.
  At k-points with ``2k`` a reciprocal-lattice vector (Γ and the zone-boundary
  time-reversal-invariant points: all 8 points of an unshifted 2×2×2 grid) it works in the
  subspace of states that are real up to ``e^{ik·r}`` (ABINIT's ``istwfk``): two bands share
  one Hamiltonian application (FFT pair) and the Rayleigh–Ritz matrices are real (timings in
  ``benchmarks/README.md``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.dft import hamiltonian as H
from difcrys.dft import terms as T

LOBPCG_ITERS = 6  # iterations per call without a tolerance
LOBPCG_MAX_ITERS = 60  # cap with a tolerance
P_CANCEL_TOL = 1e-6  # relative norm below which a search direction P is discarded
STALL_ITERS = 4  # iterations without progress after which the solver stops
REAL_WAVEFUNCTIONS = True  # real-subspace LOBPCG at k with 2k in the reciprocal lattice (single device)
GRAM_TOL = 1e-6  # relative Gram eigenvalue below which a trial direction is dropped (conditioning)


def initial_guess(setup, lattice, seed: int = 0):
    """Start vectors ``[nk, nb, npw]``: the lowest-kinetic-energy plane waves plus a small random part."""
    b = setup.basis
    nk, npw = b.miller.shape[:2]
    nb = setup.n_bands
    rng = np.random.default_rng(seed)
    X = np.zeros((nk, nb, npw), complex)
    for ik in range(nk):
        X[ik, :, :nb] = np.eye(nb)
    X = X + 1e-2 * (rng.standard_normal(X.shape) + 1j * rng.standard_normal(X.shape))
    X = X * b.mask[:, None, :]
    X = X / np.linalg.norm(X, axis=-1, keepdims=True)
    return jnp.asarray(X)


def _dense(setup, lattice, frac, psp, veff_r, X0, tol=None):
    b = setup.basis
    veff_g = T.to_g(setup, veff_r)
    nb = setup.n_bands

    def per_k(kpt, miller, mask):
        Hk = H.dense_hamiltonian(setup, lattice, frac, psp, veff_g, kpt, miller, mask)
        w, v = jnp.linalg.eigh(Hk)
        return w[:nb], v[:, :nb].T

    kpts, miller, mask, _ = T.k_arrays(setup, lattice.dtype)
    return T.kmap(setup, per_k, kpts, miller, mask)


def n_converged_bands(setup) -> int:
    """Bands whose residuals the iterative solver converges: the occupied ones, the lowest empty one
    (for the gap) and, with smearing, half of the remaining bands; the rest form a buffer."""
    nb = setup.n_bands
    n_occ = int(np.ceil(setup.n_electrons / 2 - 1e-8))
    n = n_occ + 1 if setup.smearing == "none" else n_occ + (nb - n_occ + 1) // 2
    return int(min(nb, max(n, 1)))


def _orthonormalize(Z):
    q, _ = jnp.linalg.qr(Z)
    return q


def _lobpcg(setup, lattice, frac, psp, veff_r, X0, tol=None, max_iter: int | None = None):
    """Block LOBPCG with the Hamiltonian applied once per iteration, to the preconditioned residuals only.

    ``H X`` and ``H P`` are carried along (updated with the Rayleigh–Ritz rotation), so one iteration
    costs ``nb`` Hamiltonian applications (2 FFTs each) instead of the ``3 nb`` of a naive
    implementation. The Rayleigh–Ritz step uses the Gram matrix of the (column-normalised) trial basis
    ``[X, W, P]`` through ``G^{-1/2}``; directions with a negligible Gram eigenvalue (``P`` collapsing
    near convergence) are removed by a large diagonal shift, which keeps the shapes static.

    Iterates until the residual norms ``‖H x_n − λ_n x_n‖`` of the lowest
    :func:`n_converged_bands` bands are below ``tol`` or ``max_iter`` iterations (``tol=None``:
    exactly ``LOBPCG_ITERS`` iterations). The bands above them are a buffer that speeds up the
    convergence of the block (as ABINIT's ``nbdbuf``); they are returned but less accurate.
    """
    nb = setup.n_bands
    n_check = n_converged_bands(setup)
    if max_iter is None:
        max_iter = LOBPCG_ITERS if tol is None else LOBPCG_MAX_ITERS
    tol = jnp.asarray(-1.0 if tol is None else tol, lattice.dtype)

    def per_k(kpt, miller, mask, fft_index, x0, pair=None):
        # pair is None: general k. Otherwise 2k is a reciprocal-lattice vector G0 and the
        # eigenvectors are kept in the "real" subspace C(G) = conj C(pair[G]), pair[G] = -G - G0
        # (psi(r) real up to the phase e^{ik.r}); H maps that subspace to itself
        real = pair is not None
        q = (kpt[None, :] + miller) @ T.recip(lattice)
        kin = 0.5 * jnp.sum(q * q, -1)
        P_nl = D = None
        if T.has_nonlocal(setup):
            P_nl = jnp.where(mask[:, None], T.projector_matrix(setup, lattice, frac, psp, kpt, miller), 0.0)
            D = T.projector_coupling(setup, psp)

        def apply_c(X):
            return H.apply_hamiltonian(setup, lattice, frac, psp, veff_r, kpt, miller, mask, fft_index, X, P_nl, D)

        def project(Z):  # onto the real subspace (identity for a general k)
            return 0.5 * (Z + jnp.conj(Z[pair])) if real else Z

        def inner(A, B):  # A^H B; real for two blocks of the real subspace (2 real products, not 4)
            if real:
                return A.real.T @ B.real + A.imag.T @ B.imag
            return jnp.conj(A).T @ B

        def rot(Z, C):  # Z @ C, with a real C in the real subspace
            if real:
                return jax.lax.complex(Z.real @ C, Z.imag @ C)
            return Z @ C

        def apply(X):
            if not real:
                return apply_c(X)
            # two real-subspace vectors per application: H (X1 + i X2) = H X1 + i H X2, and both
            # H X1 and H X2 are in the subspace, so A(G) = H X1 + i H X2 splits by the pairing
            m = X.shape[1]
            Xe = jnp.concatenate([X, jnp.zeros_like(X[:, :1])], 1) if m % 2 else X
            HY = apply_c(Xe[:, 0::2] + 1j * Xe[:, 1::2])
            HYc = jnp.conj(HY[pair])
            out = jnp.stack([0.5 * (HY + HYc), -0.5j * (HY - HYc)], axis=2)
            return out.reshape(X.shape[0], -1)[:, :m]

        def precond(R):
            # Teter–Payne–Allan: x = E_kin(G)/<E_kin>_R, K = (27 + 18x + 12x² + 8x³)/(27 + ... + 16x⁴)
            ek = jnp.maximum(jnp.real(jnp.sum(jnp.conj(R) * kin[:, None] * R, 0)) /
                             jnp.maximum(jnp.real(jnp.sum(jnp.conj(R) * R, 0)), 1e-30), 1e-2)
            x = kin[:, None] / ek[None, :]
            poly = 27 + 18 * x + 12 * x**2 + 8 * x**3
            return jnp.where(mask[:, None], R * poly / (poly + 16 * x**4), 0.0)

        # start: orthonormalise the guess and rotate to Ritz vectors
        X0m = project(jnp.where(mask[:, None], x0.T, 0.0))
        if real:  # Löwdin with the real Gram matrix keeps the vectors in the real subspace
            g0, U0 = jnp.linalg.eigh(inner(X0m, X0m))
            X = rot(X0m, U0 / jnp.sqrt(jnp.maximum(g0, 1e-300))[None, :])
        else:
            X = _orthonormalize(X0m)
        HX = apply(X)
        Hs = inner(X, HX)
        lam, v = jnp.linalg.eigh(0.5 * (Hs + jnp.conj(Hs).T))
        X, HX = rot(X, v), rot(HX, v)
        zeros = jnp.zeros_like(X)

        def residual_norms(X, HX, lam):
            R = HX - X * lam[None, :]
            return R, jnp.sqrt(jnp.sum(jnp.abs(R) ** 2, 0))

        def cond(carry):
            it, X, HX, lam, P, HP, rmax, rbest, stall = carry
            return (it < max_iter) & (rmax > tol) & (stall < STALL_ITERS)

        def body(carry):
            it, X, HX, lam, P, HP, _, rbest, stall = carry
            R, _ = residual_norms(X, HX, lam)
            W = project(precond(R))  # (re-projection removes the slow drift by rounding)
            W = W - rot(X, inner(X, W))  # X is orthonormal
            W = W / jnp.maximum(jnp.linalg.norm(W, axis=0, keepdims=True), 1e-300)
            HW = apply(W)
            pn = jnp.maximum(jnp.linalg.norm(P, axis=0, keepdims=True), 1e-300)
            P, HP = P / pn, HP / pn
            S = jnp.concatenate([X, W, P], axis=1)
            HS = jnp.concatenate([HX, HW, HP], axis=1)
            G = inner(S, S)
            A = inner(S, HS)
            g, U = jnp.linalg.eigh(0.5 * (G + jnp.conj(G).T))
            keep = g > GRAM_TOL * jnp.max(g)
            Tm = U * jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, g, 1.0)), 0.0)[None, :]
            As = jnp.conj(Tm).T @ A @ Tm
            As = 0.5 * (As + jnp.conj(As).T) + jnp.diag(jnp.where(keep, 0.0, 1e6)).astype(As.dtype)
            w, v = jnp.linalg.eigh(As)
            C = Tm @ v[:, :nb]
            Xn, HXn = rot(S, C), rot(HS, C)
            Pn, HPn = rot(S[:, nb:], C[nb:]), rot(HS[:, nb:], C[nb:])
            # a P column that is the small difference of large terms carries an inaccurate H P
            # (rounding of the combination): drop it rather than amplify the error by normalising
            ratio = jnp.linalg.norm(Pn, axis=0) / jnp.maximum(jnp.linalg.norm(C[nb:], axis=0), 1e-300)
            ok = (ratio > P_CANCEL_TOL)[None, :]
            Pn, HPn = jnp.where(ok, Pn, 0.0), jnp.where(ok, HPn, 0.0)
            lam_n = w[:nb]
            _, rn = residual_norms(Xn, HXn, lam_n)
            rmax = jnp.max(rn[:n_check])
            # stagnation (the residual floor set by rounding): stop after STALL_ITERS without a 10 % gain
            stall = jnp.where(rmax < 0.9 * rbest, 0, stall + 1)
            return it + 1, Xn, HXn, lam_n, Pn, HPn, rmax, jnp.minimum(rbest, rmax), stall

        _, r0 = residual_norms(X, HX, lam)
        r0 = jnp.max(r0[:n_check])
        carry = (jnp.zeros((), jnp.int32), X, HX, lam, zeros, zeros, r0, r0, jnp.zeros((), jnp.int32))
        _, X, HX, lam, _, _, _, _, _ = jax.lax.while_loop(cond, body, carry)
        # X are orthonormal Ritz vectors of the last Rayleigh–Ritz step and lam their Ritz values
        return lam, X.T

    kpts, miller, mask, fft_index = T.k_arrays(setup, lattice.dtype)
    pairs = real_k_pairs(setup.basis) if (setup.mesh is None and REAL_WAVEFUNCTIONS) else {}
    if not pairs:
        return T.kmap(setup, per_k, kpts, miller, mask, fft_index, T.kshard(setup, X0))
    nk = len(setup.basis.kpts)
    ir = np.array(sorted(pairs))
    ig = np.array([i for i in range(nk) if i not in pairs], int)
    lam_r, X_r = jax.vmap(per_k)(kpts[ir], miller[ir], mask[ir], fft_index[ir], X0[ir],
                                 jnp.asarray(np.stack([pairs[i] for i in ir])))
    lam = jnp.zeros((nk,) + lam_r.shape[1:], lam_r.dtype).at[ir].set(lam_r)
    X = jnp.zeros((nk,) + X_r.shape[1:], X_r.dtype).at[ir].set(X_r)
    if len(ig):
        lam_g, X_g = jax.vmap(per_k)(kpts[ig], miller[ig], mask[ig], fft_index[ig], X0[ig])
        lam, X = lam.at[ig].set(lam_g), X.at[ig].set(X_g)
    return lam, X


def real_k_pairs(basis) -> dict:
    """``{ik: pair}`` for the k-points with ``2k`` a reciprocal-lattice vector ``G0`` (Γ, zone-boundary
    time-reversal-invariant points): ``pair[i]`` indexes ``−G_i − G0`` in that k's plane-wave list
    (padding entries map to themselves). At these k the Kohn–Sham states can be chosen real up to
    the phase ``e^{ik·r}`` (ABINIT's ``istwfk`` > 1), and :func:`_lobpcg` applies ``H`` to two bands
    per FFT."""
    out = {}
    kpts = np.asarray(basis.kpts, float)
    for ik, k in enumerate(kpts):
        g0 = np.rint(2 * k)
        if np.max(np.abs(2 * k - g0)) > 1e-8:
            continue
        mil = np.rint(np.asarray(basis.miller[ik])).astype(np.int64)
        msk = np.asarray(basis.mask[ik], bool)
        idx = np.nonzero(msk)[0]
        lookup = {tuple(m): int(i) for i, m in zip(idx, mil[idx])}
        partner = -mil[idx] - g0.astype(np.int64)[None, :]
        j = np.array([lookup.get(tuple(m), -1) for m in partner])
        if np.any(j < 0):  # sphere not closed under G -> -G - G0 (should not happen for |k+G| cut-offs)
            continue
        pair = np.arange(len(mil))
        pair[idx] = j
        out[ik] = pair
    return out


SOLVERS = {"dense": _dense, "lobpcg": _lobpcg}


def get(name: str):
    from difcrys.errors import ConfigError

    if name not in SOLVERS:
        raise ConfigError(f"unknown eigensolver {name!r}; choose one of {sorted(SOLVERS)}")
    return SOLVERS[name]
