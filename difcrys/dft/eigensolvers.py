"""Eigensolvers for the Kohn–Sham Hamiltonian behind one interface.

``solve(setup, lattice, frac, psp, veff_r, X0) -> (eigenvalues [nk, nb], coeffs [nk, nb, npw])``
returns the lowest ``nb = setup.n_bands`` eigenpairs at every k-point (batched with
``vmap``):

* ``dense``: builds ``H_k`` and calls ``eigh`` — exact, O(npw³), for small bases;
* ``lobpcg``: matrix-free preconditioned block LOBPCG (A. V. Knyazev, SIAM J. Sci.
  Comput. 23, 517 (2001)) with the Teter–Payne–Allan kinetic preconditioner
  (M. P. Teter, M. C. Payne, D. C. Allan, Phys. Rev. B 40, 12255 (1989)), warm-started
  from the previous SCF step's vectors ``X0``; a fixed number of iterations per call
  (the SCF loop converges the subspace together with the density).
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

    def per_k(kpt, miller, mask, fft_index, x0):
        q = (kpt[None, :] + miller) @ T.recip(lattice)
        kin = 0.5 * jnp.sum(q * q, -1)
        P_nl = D = None
        if T.has_nonlocal(setup):
            P_nl = jnp.where(mask[:, None], T.projector_matrix(setup, lattice, frac, psp, kpt, miller), 0.0)
            D = T.projector_coupling(setup, psp)

        def apply(X):
            return H.apply_hamiltonian(setup, lattice, frac, psp, veff_r, kpt, miller, mask, fft_index, X, P_nl, D)

        def precond(R):
            # Teter–Payne–Allan: x = E_kin(G)/<E_kin>_R, K = (27 + 18x + 12x² + 8x³)/(27 + ... + 16x⁴)
            ek = jnp.maximum(jnp.real(jnp.sum(jnp.conj(R) * kin[:, None] * R, 0)) /
                             jnp.maximum(jnp.real(jnp.sum(jnp.conj(R) * R, 0)), 1e-30), 1e-2)
            x = kin[:, None] / ek[None, :]
            poly = 27 + 18 * x + 12 * x**2 + 8 * x**3
            return jnp.where(mask[:, None], R * poly / (poly + 16 * x**4), 0.0)

        # start: orthonormalise the guess and rotate to Ritz vectors
        X = _orthonormalize(jnp.where(mask[:, None], x0.T, 0.0))
        HX = apply(X)
        Hs = jnp.conj(X).T @ HX
        lam, v = jnp.linalg.eigh(0.5 * (Hs + jnp.conj(Hs).T))
        X, HX = X @ v, HX @ v
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
            W = precond(R)
            W = W - X @ (jnp.conj(X).T @ W)  # X is orthonormal
            W = W / jnp.maximum(jnp.linalg.norm(W, axis=0, keepdims=True), 1e-300)
            HW = apply(W)
            pn = jnp.maximum(jnp.linalg.norm(P, axis=0, keepdims=True), 1e-300)
            P, HP = P / pn, HP / pn
            S = jnp.concatenate([X, W, P], axis=1)
            HS = jnp.concatenate([HX, HW, HP], axis=1)
            G = jnp.conj(S).T @ S
            A = jnp.conj(S).T @ HS
            g, U = jnp.linalg.eigh(0.5 * (G + jnp.conj(G).T))
            keep = g > GRAM_TOL * jnp.max(g)
            Tm = U * jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, g, 1.0)), 0.0)[None, :]
            As = jnp.conj(Tm).T @ A @ Tm
            As = 0.5 * (As + jnp.conj(As).T) + jnp.diag(jnp.where(keep, 0.0, 1e6)).astype(As.dtype)
            w, v = jnp.linalg.eigh(As)
            C = Tm @ v[:, :nb]
            Xn, HXn = S @ C, HS @ C
            Pn, HPn = S[:, nb:] @ C[nb:], HS[:, nb:] @ C[nb:]
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
    return T.kmap(setup, per_k, kpts, miller, mask, fft_index, T.kshard(setup, X0))


SOLVERS = {"dense": _dense, "lobpcg": _lobpcg}


def get(name: str):
    from difcrys.errors import ConfigError

    if name not in SOLVERS:
        raise ConfigError(f"unknown eigensolver {name!r}; choose one of {sorted(SOLVERS)}")
    return SOLVERS[name]
