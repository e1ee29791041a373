"""Derivatives of converged Kohn–Sham quantities by implicit differentiation of the SCF fixed point.

The SCF density solves ``ρ* = G(ρ*, θ)``, with ``G`` the Kohn–Sham map (potential from
ρ, diagonalisation, occupations, new density) and ``θ`` every traced input
(lattice, fractional positions, pseudopotential and XC parameters). For any
scalar ``Q(ρ*, θ)`` the implicit function theorem gives

    dQ/dθ = ∂Q/∂θ + (∂G/∂θ)ᵀ u,    (I − (∂G/∂ρ)ᵀ) u = ∂Q/∂ρ,

a linear-response (Dyson / dielectric) equation solved here with GMRES using
vector–Jacobian products of ``G`` — never by unrolling the SCF iterations.

The derivative of the density and eigenvalues through the diagonalisation uses
the Daleckii–Krein formula on the full spectrum of the dense Hamiltonian:
``δP = V [D ∘ (V† δH V)] V†`` with ``D_ij = (f_i − f_j)/(ε_i − ε_j)`` (``f'(ε_i)`` for
(near-)degenerate pairs), plus the Fermi-level shift that conserves the electron
number for smeared occupations. It is exact for degenerate states (the density is
a symmetric function of a degenerate set). Eigenvalue derivatives are returned for
the *average* of each degenerate cluster (a symmetric function, hence well defined);
a symmetry-breaking perturbation splits degenerate levels, and only cluster averages
(and quantities like the gap at non-degenerate edges) have unique derivatives.

Symmetry: with irreducible k-points and a symmetrised density, the response is
computed within the crystal's symmetry. That is exact for symmetry-preserving
perturbations (e.g. isotropic or symmetric strain, pseudopotential parameters); for
symmetry-breaking ones (moving one atom) prepare the problem with ``symmetry=False``.

References: Yu. L. Daleckii, S. G. Krein, Amer. Math. Soc. Transl. 47, 1 (1965);
S. Baroni et al., Rev. Mod. Phys. 73, 515 (2001) (density-functional perturbation theory).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.sparse.linalg import gmres

from difcrys.dft import hamiltonian as Hm
from difcrys.dft import smearing as sm
from difcrys.dft import terms as T
from difcrys.dft.scf import initial_density, make_mixer

DEGENERACY_TOL = 1e-7  # Ha


def hamiltonians(setup, params, rho):
    """Dense ``H_k`` for every k ``[nk, npw, npw]`` at input density ``rho``."""
    lattice, frac, psp = params["lattice"], params["frac"], params["psp"]
    veff_r, _ = T.effective_potential(setup, lattice, frac, psp, params["xc"], rho)
    veff_g = T.to_g(setup, veff_r)
    b = setup.basis
    return jax.vmap(lambda k, m, mask: Hm.dense_hamiltonian(setup, lattice, frac, psp, veff_g, k, m, mask))(
        jnp.asarray(b.kpts), jnp.asarray(b.miller, lattice.dtype), jnp.asarray(b.mask))


def _occ_full(setup, w_nb, w_full):
    """Occupations and df/dε on the full spectrum, from the Fermi level of the lowest bands."""
    occ_nb, mu, _ = T.occupations(setup, w_nb)
    if setup.smearing == "none":
        nb = w_nb.shape[1]
        f = jnp.concatenate([occ_nb, jnp.zeros(w_full[:, nb:].shape, occ_nb.dtype)], 1)
        return f, jnp.zeros_like(f), mu
    x = (w_full - mu) / setup.width
    f = 2 * sm.occupation(setup.smearing, x)
    fp = 2 * jax.vmap(jax.vmap(jax.grad(lambda t: sm.occupation(setup.smearing, t))))(x) / setup.width
    return f, fp, mu


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def eig_density(setup, Hs):
    """Lowest ``n_bands`` eigenvalues ``[nk, nb]`` and ``Ω ρ(r)`` (symmetrised) from Hamiltonians ``[nk, npw, npw]``."""
    nb = setup.n_bands
    w, V = jnp.linalg.eigh(Hs)
    occ, _, _ = T.occupations(setup, w[:, :nb])
    coeffs = jnp.swapaxes(V[:, :, :nb], 1, 2)
    rho_vol = T.density(setup, _unit_lattice(jnp.ones((), w.dtype)), coeffs, occ)
    return w[:, :nb], rho_vol


def _unit_lattice(one):
    # a unit-volume lattice so that T.density returns Ω ρ (density() divides by the volume)
    return jnp.eye(3, dtype=one.dtype) * one


def _to_grid(setup, c, fft_index, mask):
    ntot = setup.basis.n_grid
    grid = jnp.zeros((ntot,), c.dtype).at[fft_index].add(jnp.where(mask, c, 0.0))
    return (jnp.fft.ifftn(grid.reshape(setup.basis.fft_shape)) * ntot).reshape(-1)


@eig_density.defjvp
def _eig_density_jvp(setup, primals, tangents):
    (Hs,), (dHs,) = primals, tangents
    nb = setup.n_bands
    b = setup.basis
    w, V = jnp.linalg.eigh(Hs)
    f, fp, mu = _occ_full(setup, w[:, :nb], w)
    occ = f[:, :nb]
    coeffs = jnp.swapaxes(V[:, :, :nb], 1, 2)
    rho_vol = T.density(setup, _unit_lattice(jnp.ones((), w.dtype)), coeffs, occ)

    Vt = jnp.einsum("kai,kab,kbj->kij", jnp.conj(V), dHs, V)  # V† δH V
    dw = jnp.real(jnp.diagonal(Vt, axis1=1, axis2=2))  # [nk, npw]
    gap = w[:, :, None] - w[:, None, :]
    degenerate = jnp.abs(gap) < DEGENERACY_TOL
    D = jnp.where(degenerate, 0.5 * (fp[:, :, None] + fp[:, None, :]),
                  (f[:, :, None] - f[:, None, :]) / jnp.where(degenerate, 1.0, gap))
    M = D * Vt
    weights = jnp.asarray(b.weights)
    if setup.smearing != "none":
        # Fermi-level shift conserving N: Σ w f' (δε − δμ) = 0
        dmu = jnp.sum(weights[:, None] * fp * dw) / jnp.maximum(jnp.sum(weights[:, None] * fp), 1e-300)
        idx = jnp.arange(w.shape[1])
        M = M.at[:, idx, idx].add(-fp * dmu)
    # δ(Ωρ)(r) = Σ_k w_k Σ_ij M_ij ψ_i(r) ψ_j(r)*, with j restricted to the lowest nb states (M Hermitian,
    # M_ij ≈ 0 when both f and f' vanish for i and j): 2 Re Σ_{j<nb} ψ_j* Σ_i M'_ij ψ_i, M' halves i < nb.
    npw = w.shape[1]
    half = jnp.where(jnp.arange(npw) < nb, 0.5, 1.0)
    Mp = M[:, :, :nb] * half[None, :, None]
    Phi = jnp.einsum("kai,kij->kaj", V, Mp)  # [nk, npw, nb]

    def per_k(c, phi, idx, mask):
        psi = jax.vmap(lambda x: _to_grid(setup, x, idx, mask))(c)  # [nb, Ngrid]
        ph = jax.vmap(lambda x: _to_grid(setup, x, idx, mask), in_axes=1)(phi)  # [nb, Ngrid]
        return 2 * jnp.real(jnp.sum(jnp.conj(psi) * ph, 0))

    drho_k = jax.vmap(per_k)(coeffs, Phi, jnp.asarray(b.fft_index), jnp.asarray(b.mask))
    drho = jnp.tensordot(weights, drho_k, axes=1).reshape(b.fft_shape)
    drho = T.symmetrize(setup, drho)
    # eigenvalue tangents: averages over degenerate clusters of the lowest nb
    cl = degenerate[:, :nb, :nb].astype(w.dtype)
    dlam = jnp.einsum("knm,km->kn", cl, dw[:, :nb]) / jnp.sum(cl, -1)
    return (w[:, :nb], rho_vol), (dlam, drho)


def ks_map(setup, params, rho):
    """The Kohn–Sham map ``G(ρ, θ)``: output density [Bohr⁻³] and eigenvalues [Ha] for input density ``rho``."""
    eigs, rho_vol = eig_density(setup, hamiltonians(setup, params, rho))
    return rho_vol / T.volume(params["lattice"]), eigs


def solve_scf(setup, params, rho0=None, maxiter: int = 100, tol: float = 1e-10):
    """Jittable SCF (``lax.while_loop``, Anderson mixing): ``(rho*, n_iter, converged)``.

    Converged when ``‖G(ρ) − ρ‖₂ < tol`` (integrated, Bohr^{-3/2}).
    """
    rho0 = initial_density(setup, params) if rho0 is None else rho0
    mixer = make_mixer(setup, params)
    dv = T.volume(params["lattice"]) / setup.basis.n_grid

    def cond(c):
        _, _, it, res = c
        return (it < maxiter) & (res >= tol)

    def body(c):
        rho, st, it, _ = c
        out, _ = ks_map(setup, params, rho)
        res = jnp.sqrt(jnp.sum((out - rho) ** 2) * dv)
        new, st = mixer.step(st, rho, out)
        new = jnp.where(res < tol, out, new)
        return new, st, it + 1, res

    rho, _, it, res = jax.lax.while_loop(cond, body, (rho0, mixer.init(rho0), 0, jnp.inf))
    return rho, it, res < tol


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def converged_density(setup, params, rho0):
    """Self-consistent density ``ρ*(θ)``, differentiable w.r.t. ``params`` by the implicit function theorem."""
    rho, _, _ = solve_scf(setup, params, rho0)
    return rho


def _cd_fwd(setup, params, rho0):
    rho, _, _ = solve_scf(setup, params, rho0)
    return rho, (params, rho)


def _cd_bwd(setup, res, rho_bar):
    params, rho = res
    _, vjp_rho = jax.vjp(lambda r: ks_map(setup, params, r)[0], rho)
    A = lambda u: u - vjp_rho(u)[0]
    u, _ = gmres(A, rho_bar, tol=1e-12, atol=0.0, restart=40, maxiter=10)
    _, vjp_p = jax.vjp(lambda p: ks_map(setup, p, rho)[0], params)
    (p_bar,) = vjp_p(u)
    return p_bar, jnp.zeros_like(rho)


converged_density.defvjp(_cd_fwd, _cd_bwd)


def converged_eigenvalues(setup, params, rho0=None):
    """Kohn–Sham eigenvalues ``[nk, nb]`` [Ha] at self-consistency, differentiable w.r.t. ``params``."""
    rho0 = initial_density(setup, params) if rho0 is None else jax.lax.stop_gradient(rho0)
    rho = converged_density(setup, params, rho0)
    _, eigs = ks_map(setup, params, rho)
    return eigs


def band_gap(setup, params, rho0=None):
    """Indirect band gap [Ha] (CBM − VBM over the k-set) of an insulator at self-consistency; differentiable."""
    eigs = converged_eigenvalues(setup, params, rho0)
    nocc = int(round(setup.n_electrons)) // 2
    return jnp.min(eigs[:, nocc]) - jnp.max(eigs[:, nocc - 1])


def total_energy(setup, params, rho0=None):
    """Total energy [Ha] at self-consistency as a differentiable function of ``params``."""
    rho0 = initial_density(setup, params) if rho0 is None else jax.lax.stop_gradient(rho0)
    rho = converged_density(setup, params, rho0)
    Hs = hamiltonians(setup, params, rho)
    nb = setup.n_bands
    w, V = jnp.linalg.eigh(jax.lax.stop_gradient(Hs))
    coeffs = jnp.swapaxes(V[:, :, :nb], 1, 2)
    occ, _, ts = T.occupations(setup, w[:, :nb])
    # variational: derivatives at fixed orbitals are exact (Hellmann–Feynman)
    return T.total_energy(setup, params["lattice"], params["frac"], params["psp"], params["xc"], coeffs, occ, ts)
