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

LOBPCG_ITERS = 6


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


def _dense(setup, lattice, frac, psp, veff_r, X0):
    b = setup.basis
    veff_g = T.to_g(setup, veff_r)
    nb = setup.n_bands

    def per_k(kpt, miller, mask):
        Hk = H.dense_hamiltonian(setup, lattice, frac, psp, veff_g, kpt, miller, mask)
        w, v = jnp.linalg.eigh(Hk)
        return w[:nb], v[:, :nb].T

    kpts, miller, mask, _ = T.k_arrays(setup, lattice.dtype)
    return T.kmap(setup, per_k, kpts, miller, mask)


def _orthonormalize(Z):
    q, _ = jnp.linalg.qr(Z)
    return q


def _lobpcg(setup, lattice, frac, psp, veff_r, X0, n_iter: int = LOBPCG_ITERS):
    b = setup.basis
    nb = setup.n_bands

    def per_k(kpt, miller, mask, fft_index, x0):
        q = (kpt[None, :] + miller) @ T.recip(lattice)
        kin = 0.5 * jnp.sum(q * q, -1)
        P_nl = D = None
        if T.has_nonlocal(setup):
            P_nl = jnp.where(mask[:, None], T.projector_matrix(setup, lattice, frac, psp, kpt, miller), 0.0)
            D = T.projector_coupling(setup, psp)

        def apply(X):
            return H.apply_hamiltonian(setup, lattice, frac, psp, veff_r, kpt, miller, mask, fft_index, X, P_nl, D)

        def precond(R, lam):
            # TPA: x = E_kin(G)/<E_kin>, K = (27 + 18x + 12x² + 8x³)/(27 + 18x + 12x² + 8x³ + 16x⁴)
            ek = jnp.maximum(jnp.real(jnp.sum(jnp.conj(R) * kin[:, None] * R, 0)) /
                             jnp.maximum(jnp.real(jnp.sum(jnp.conj(R) * R, 0)), 1e-30), 1e-2)
            x = kin[:, None] / ek[None, :]
            poly = 27 + 18 * x + 12 * x**2 + 8 * x**3
            return jnp.where(mask[:, None], R * poly / (poly + 16 * x**4), 0.0)

        def rayleigh_ritz(Q):
            HQ = apply(Q)
            Hs = jnp.conj(Q).T @ HQ
            Hs = 0.5 * (Hs + jnp.conj(Hs).T)
            w, v = jnp.linalg.eigh(Hs)
            return w, v, HQ

        X = _orthonormalize(jnp.where(mask[:, None], x0.T, 0.0))
        w, v, HX = rayleigh_ritz(X)
        X = X @ v[:, :nb]
        lam = w[:nb]
        Pdir = jnp.zeros_like(X)

        def body(i, carry):
            X, lam, Pdir = carry
            R = apply(X) - X * lam[None, :]
            W = precond(R, lam)
            Z = jnp.concatenate([X, W, Pdir], axis=1)
            Q = _orthonormalize(Z)
            w, v, _ = rayleigh_ritz(Q)
            C = v[:, :nb]
            Xn = Q @ C
            Pn = Q[:, nb:] @ C[nb:, :]
            return Xn, w[:nb], Pn

        X, lam, Pdir = jax.lax.fori_loop(0, n_iter, body, (X, lam, Pdir))
        # final Rayleigh–Ritz in span(X) for accurate eigenpairs
        w, v, _ = rayleigh_ritz(X)
        return w, (X @ v).T

    kpts, miller, mask, fft_index = T.k_arrays(setup, lattice.dtype)
    return T.kmap(setup, per_k, kpts, miller, mask, fft_index, T.kshard(setup, X0))


SOLVERS = {"dense": _dense, "lobpcg": _lobpcg}


def get(name: str):
    from difcrys.errors import ConfigError

    if name not in SOLVERS:
        raise ConfigError(f"unknown eigensolver {name!r}; choose one of {sorted(SOLVERS)}")
    return SOLVERS[name]
