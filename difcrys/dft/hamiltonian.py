"""Kohn–Sham Hamiltonian in the plane-wave basis of one k-point (Hartree atomic units).

``H_k[G, G'] = ½|k+G|² δ_GG' + V_eff(G − G') + Ω⁻¹ Σ_pq P[G,p] D_pq P[G',q]*``
(local potential by index arithmetic on the FFT grid — exact because the grid
holds all ``G − G'`` of the sphere — nonlocal part from the separable GTH
projectors). Dense matrices serve small bases; :func:`apply_hamiltonian` applies
the same operator matrix-free with FFTs for the iterative eigensolver.
Padded plane waves (mask False) decouple with a large diagonal so their
eigenvalues lie far above the physical ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from difcrys.dft import terms as T

PAD_SHIFT = 1.0e4  # Ha, diagonal for padded plane waves


def dense_hamiltonian(setup, lattice, frac, psp, veff_g, kpt, miller, mask):
    """Dense ``H_k`` ``[npw, npw]`` (complex)."""
    N = jnp.asarray(setup.basis.fft_shape)
    q = (kpt[None, :] + miller) @ T.recip(lattice)
    kin = 0.5 * jnp.sum(q * q, -1)
    mi = miller.astype(jnp.int32)
    d = jnp.mod(mi[:, None, :] - mi[None, :, :], N)
    idx = (d[..., 0] * N[1] + d[..., 1]) * N[2] + d[..., 2]
    H = veff_g[idx] + jnp.diag(kin).astype(veff_g.dtype)
    if T.has_nonlocal(setup):
        P = T.projector_matrix(setup, lattice, frac, psp, kpt, miller)
        P = jnp.where(mask[:, None], P, 0.0)
        D = T.projector_coupling(setup, psp)
        H = H + (P @ D.astype(P.dtype) @ jnp.conj(P).T) / T.volume(lattice)
    both = mask[:, None] & mask[None, :]
    H = jnp.where(both, H, 0.0) + jnp.diag(jnp.where(mask, 0.0, PAD_SHIFT)).astype(H.dtype)
    return 0.5 * (H + jnp.conj(H).T)


def apply_hamiltonian(setup, lattice, frac, psp, veff_r, kpt, miller, mask, fft_index, X, P=None, D=None):
    """``H_k X`` for a block ``X [npw, m]`` by FFTs (local) and projectors (nonlocal)."""
    q = (kpt[None, :] + miller) @ T.recip(lattice)
    kin = 0.5 * jnp.sum(q * q, -1)
    Xm = jnp.where(mask[:, None], X, 0.0)
    psi = T.pw_to_real(setup, Xm.T, miller, mask)  # all columns in one batched transform
    local = T.real_to_pw(setup, psi * veff_r[None], miller).T
    HX = kin[:, None] * Xm + local
    if T.has_nonlocal(setup):
        if P is None:
            P = jnp.where(mask[:, None], T.projector_matrix(setup, lattice, frac, psp, kpt, miller), 0.0)
        if D is None:
            D = T.projector_coupling(setup, psp)
        HX = HX + P @ (D.astype(P.dtype) @ (jnp.conj(P).T @ Xm)) / T.volume(lattice)
    HX = jnp.where(mask[:, None], HX, PAD_SHIFT * X)
    return HX
