"""Kohn–Sham energy terms and potentials as pure functions (Hartree atomic units).

Everything here is a pure JAX function of traced arrays — the lattice ``[3,3]``
(Bohr, rows), fractional positions ``[n,3]``, stacked pseudopotential parameters,
XC parameters, plane-wave coefficients and occupations — plus a static
:class:`Setup` (basis, species layout, functional, smearing). Forces and stress
are ``jax.grad`` of :func:`total_energy` at fixed coefficients (Hellmann–Feynman,
fixed-basis stress).

Normalisation: a state is ``ψ_nk(r) = Ω^{-1/2} Σ_G c_nk(G) e^{i(k+G)·r}`` with
``Σ_G |c|² = 1``; the density is ``ρ(r) = Σ_k w_k Σ_n f_nk |ψ_nk(r)|²`` with
occupations ``f ∈ [0, 2]``; Fourier components ``ρ(G) = (1/N) Σ_r ρ(r) e^{−iG·r}``.

Energy (ABINIT's decomposition; R. M. Martin, Electronic Structure, Eq. 13.1 ff.):
``E = E_kin + E_loc + E_nl + E_H + E_xc + E_ewald + E_psp_core (+ −σS)`` with
``E_H = (Ω/2) Σ_{G≠0} 4π |ρ(G)|²/G²`` and ``E_psp_core = N_el Σ_a ε_atm,a / Ω``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.dft import pseudo, smearing as smearing_mod
from difcrys.dft.basis import PlaneWaveBasis
from difcrys.dft.ewald import EwaldSetup, ewald_energy
from difcrys.dft.xc import XCFunctional

ENERGY_TERMS = ("kinetic", "local", "nonlocal", "hartree", "xc", "ewald", "psp_core", "entropy")


@dataclasses.dataclass(frozen=True, eq=False)
class Setup:
    """Static (host-decided) part of a Kohn–Sham problem.

    Attributes:
        basis: the plane-wave basis.
        species_of_atom: ``[n]`` species index per atom.
        species_onehot: ``[S, n]`` float one-hot.
        layout: projector channel layout (:func:`difcrys.dft.pseudo.projector_layout`).
        n_electrons: number of valence electrons.
        n_bands: number of bands computed per k-point.
        xc: the exchange–correlation functional.
        smearing: one of :data:`difcrys.dft.smearing.SMEARINGS`.
        width: smearing width σ [Ha].
        ewald: Ewald summation setup.
        symops: ``(rotations [nsym,3,3], translations [nsym,3])`` used to symmetrise the density
            (None without symmetry); forces and stress are symmetrised with the same operations.
        psp_list: the per-species pseudopotential parameters (host copies).
        mesh: optional ``jax.sharding.Mesh`` with one axis ``"k"``: k-point-batched work is
            sharded across its devices (k-points padded with zero weights to a multiple of the
            device count).
        n_kpoints_real: number of k-points before that padding.
    """

    basis: PlaneWaveBasis
    species_of_atom: np.ndarray
    species_onehot: np.ndarray
    layout: dict
    n_electrons: float
    n_bands: int
    xc: XCFunctional
    smearing: str
    width: float
    ewald: EwaldSetup
    symops: tuple | None = None
    psp_list: tuple = ()
    mesh: object = None
    n_kpoints_real: int | None = None


# ----------------------------------------------------------------------------- sharding
def kshard(setup: "Setup", x):
    """Constrain an array with a leading k-point axis to be sharded over ``setup.mesh`` (no-op without one)."""
    if setup.mesh is None:
        return x
    from jax.sharding import NamedSharding, PartitionSpec

    spec = PartitionSpec("k", *([None] * (jnp.ndim(x) - 1)))
    return jax.lax.with_sharding_constraint(x, NamedSharding(setup.mesh, spec))


def kmap(setup: "Setup", f, *k_args):
    """``vmap(f)`` over per-k arguments; with a mesh, each device maps over its own k-slice
    (``shard_map``: no communication inside ``f``; the later sum over k is one all-reduce).

    Inside the sharded region the local k-points are looped over (``lax.map``), not vmapped: a
    vmapped LAPACK call (``eigh``, ``qr``, ``solve``) becomes one batched kernel that splits its
    batch over XLA's intra-op thread pool and blocks a pool thread while it waits. With one such
    kernel per device and as many devices as pool threads (forced host devices on a small CPU),
    every pool thread waits for work that no free thread can run: a deadlock. One matrix per call
    runs inline. On a single device the vmapped batch is kept (and is faster)."""
    if setup.mesh is None:
        return jax.vmap(f)(*k_args)
    from jax.sharding import PartitionSpec

    spec = PartitionSpec("k")
    local = lambda *a: jax.lax.map(lambda t: f(*t), a)
    return jax.shard_map(local, mesh=setup.mesh, in_specs=spec, out_specs=spec, check_vma=False)(*k_args)


def k_arrays(setup: "Setup", dtype):
    """The basis' per-k arrays (k-points, Miller indices, masks, FFT indices), sharded over k."""
    b = setup.basis
    return (kshard(setup, jnp.asarray(b.kpts, dtype)), kshard(setup, jnp.asarray(b.miller, dtype)),
            kshard(setup, jnp.asarray(b.mask)), kshard(setup, jnp.asarray(b.fft_index)))


# ----------------------------------------------------------------------------- grids
def recip(lattice):
    """Reciprocal lattice rows ``B = 2π L^{-T}`` [Bohr⁻¹]."""
    return 2 * jnp.pi * jnp.linalg.inv(lattice).T


def grid_g2(setup: Setup, lattice):
    """``|G|²`` on the FFT grid, flat ``[Ngrid]``."""
    gm = jnp.asarray(setup.basis.grid_miller().reshape(-1, 3), lattice.dtype)
    G = gm @ recip(lattice)
    return jnp.sum(G * G, -1), G


def volume(lattice):
    return jnp.abs(jnp.linalg.det(lattice))


def to_g(setup: Setup, f_r):
    """Real-space grid ``[N1,N2,N3]`` → Fourier components ``f(G)`` flat ``[Ngrid]`` (``fftn/N``)."""
    return jnp.fft.fftn(f_r).reshape(-1) / setup.basis.n_grid


def to_r(setup: Setup, f_g):
    """Fourier components flat ``[Ngrid]`` → real-space grid (real part)."""
    return jnp.real(jnp.fft.ifftn(f_g.reshape(setup.basis.fft_shape)) * setup.basis.n_grid)


def symmetrize(setup: Setup, rho_r):
    """Symmetrise a density over the space group (no-op without symmetry maps)."""
    b = setup.basis
    if b.sym_index is None:
        return rho_r
    rg = to_g(setup, rho_r)
    gm = jnp.asarray(b.grid_miller().reshape(-1, 3), rho_r.dtype)

    def add(acc, op):  # one operation at a time: no [nsym, Ngrid] temporaries
        idx, t = op
        src = jnp.maximum(idx, 0)
        phase = jnp.exp(2j * jnp.pi * (gm[src] @ t))
        return acc + jnp.where(idx >= 0, rg[src] * phase, 0.0), None

    acc, _ = jax.lax.scan(add, jnp.zeros_like(rg), (jnp.asarray(b.sym_index), jnp.asarray(b.sym_trans, rho_r.dtype)))
    return to_r(setup, acc / b.sym_index.shape[0])


# ----------------------------------------------------------------------------- local terms
def structure_factors(setup: Setup, frac):
    """``[S, Ngrid]`` ``Σ_{a∈s} e^{−2πi G·x_a}``."""
    gm = jnp.asarray(setup.basis.grid_miller().reshape(-1, 3), frac.dtype)
    phase = -2 * jnp.pi * (frac @ gm.T)  # [n, Ngrid]
    e = jnp.exp(1j * phase)
    return jnp.asarray(setup.species_onehot, frac.dtype) @ e


def local_potential_g(setup: Setup, lattice, frac, psp):
    """Local pseudopotential ``V_loc(G)`` flat ``[Ngrid]`` [Ha], G = 0 component zero (ABINIT convention)."""
    g2, _ = grid_g2(setup, lattice)
    ff = jax.vmap(lambda z, r, c: pseudo.local_form_factor(g2, z, r, c))(psp["zion"], psp["rloc"], psp["c"])
    return jnp.sum(ff * structure_factors(setup, frac), 0) / volume(lattice)


def hartree_potential_g(setup: Setup, lattice, rho_g):
    g2, _ = grid_g2(setup, lattice)
    safe = jnp.where(g2 > 1e-12, g2, 1.0)
    return jnp.where(g2 > 1e-12, 4 * jnp.pi * rho_g / safe, 0.0)


def hartree_energy(setup: Setup, lattice, rho_g):
    g2, _ = grid_g2(setup, lattice)
    safe = jnp.where(g2 > 1e-12, g2, 1.0)
    return 0.5 * volume(lattice) * jnp.sum(jnp.where(g2 > 1e-12, 4 * jnp.pi * jnp.abs(rho_g) ** 2 / safe, 0.0))


def density_gradient_sq(setup: Setup, lattice, rho_r):
    """``|∇ρ|²`` on the grid by FFT differentiation."""
    _, G = grid_g2(setup, lattice)
    rg = to_g(setup, rho_r)
    grads = [to_r(setup, 1j * G[:, d] * rg) for d in range(3)]
    return grads[0] ** 2 + grads[1] ** 2 + grads[2] ** 2


def xc_energy(setup: Setup, lattice, rho_r, xc_params):
    """``E_xc = Σ_r ρ ε_xc(ρ, |∇ρ|²) ΔV`` [Ha]."""
    dv = volume(lattice) / setup.basis.n_grid
    sigma = density_gradient_sq(setup, lattice, rho_r) if setup.xc.needs_gradient else None
    return jnp.sum(rho_r * setup.xc.eps(rho_r, sigma, xc_params)) * dv


def xc_potential(setup: Setup, lattice, rho_r, xc_params):
    """``v_xc(r) = δE_xc/δρ(r)`` by automatic differentiation, and ``E_xc``."""
    dv = volume(lattice) / setup.basis.n_grid
    e, g = jax.value_and_grad(xc_energy, argnums=2)(setup, lattice, rho_r, xc_params)
    return g / dv, e


def effective_potential(setup: Setup, lattice, frac, psp, xc_params, rho_r):
    """``v_eff(r) = v_loc + v_H + v_xc`` on the grid [Ha], and the XC energy."""
    rho_g = to_g(setup, rho_r)
    v_g = local_potential_g(setup, lattice, frac, psp) + hartree_potential_g(setup, lattice, rho_g)
    vxc, exc = xc_potential(setup, lattice, rho_r, xc_params)
    return to_r(setup, v_g) + vxc, exc


# ----------------------------------------------------------------------------- nonlocal
def kpg(setup: Setup, lattice, ik=None):
    """``k + G`` cartesian [Bohr⁻¹], ``[nk, npw, 3]`` (or ``[npw, 3]`` for one k)."""
    b = setup.basis
    m = jnp.asarray(b.kpts[:, None, :] + b.miller, lattice.dtype)
    q = m @ recip(lattice)
    return q if ik is None else q[ik]


def projector_matrix(setup: Setup, lattice, frac, psp, kpt, miller):
    """Projectors ``P[G, p] = P̃_p(|q|²) S_p(q) e^{−2πi (k+G)·x_a}`` for one k, ``[npw, nproj]``.

    ``⟨p|ψ⟩ = Ω^{-1/2} Σ_G conj(P[G,p]) c(G)``.
    """
    lay = setup.layout
    m = kpt[None, :] + miller  # [npw, 3] fractional
    q = m @ recip(lattice)
    q2 = jnp.sum(q * q, -1)
    cols = []
    for l in range(pseudo.LMAX + 1):
        sel_l = lay["l"] == l
        if not np.any(sel_l):
            continue
        ylm = pseudo.solid_harmonics(l, q)  # [npw, 2l+1]
        for i in range(1, pseudo.NPROJ_MAX + 1):
            sel = np.where(sel_l & (lay["i"] == i))[0]
            if len(sel) == 0:
                continue
            r = psp["r"][lay["species"][sel], l]  # [nsel]
            rad = jax.vmap(lambda rr: pseudo.projector_radial(l, i, q2, rr), out_axes=1)(r)  # [npw, nsel]
            y = ylm[:, lay["m"][sel]]
            ph = jnp.exp(-2j * jnp.pi * (m @ frac[lay["atom"][sel]].T))
            cols.append((sel, rad * y * ph))
    order = np.concatenate([s for s, _ in cols])
    P = jnp.concatenate([c for _, c in cols], axis=1)
    inv = np.argsort(order)
    return P[:, inv]


def projector_coupling(setup: Setup, psp):
    """``D[p, q] = h^{l}_{i_p i_q}`` of the atom's species for channels with equal (atom, l, m), else 0."""
    lay = setup.layout
    same = ((lay["atom"][:, None] == lay["atom"][None, :]) & (lay["l"][:, None] == lay["l"][None, :])
            & (lay["m"][:, None] == lay["m"][None, :]))
    h = psp["h"][lay["species"][:, None], lay["l"][:, None], lay["i"][:, None] - 1, lay["i"][None, :] - 1]
    return jnp.where(jnp.asarray(same), h, 0.0)


def has_nonlocal(setup: Setup) -> bool:
    return len(setup.layout["atom"]) > 0


# ----------------------------------------------------------------------------- wavefunction FFTs
def wave_box(setup: Setup) -> tuple[int, int, int]:
    """Half-widths ``(m1, m2, m3)`` of the box holding every plane-wave sphere: ``|G_i| ≤ m_i`` (static)."""
    b = setup.basis
    mill = np.abs(np.asarray(b.miller))[np.asarray(b.mask)]
    return tuple(int(v) for v in mill.max(0))


def _pad_axis(a, axis, m, n):
    # box frequencies (0..m, −m..−1) → the full FFT axis of length n (zeros in between)
    lo = jax.lax.slice_in_dim(a, 0, m + 1, axis=axis)
    hi = jax.lax.slice_in_dim(a, m + 1, 2 * m + 1, axis=axis)
    zs = list(a.shape)
    zs[axis] = n - (2 * m + 1)
    return jnp.concatenate([lo, jnp.zeros(zs, a.dtype), hi], axis=axis)


def _crop_axis(a, axis, m, n):
    return jnp.concatenate([jax.lax.slice_in_dim(a, 0, m + 1, axis=axis),
                            jax.lax.slice_in_dim(a, n - m, n, axis=axis)], axis=axis)


def _box_index(setup: Setup, miller_k):
    m1, m2, m3 = wave_box(setup)
    b1, b2, b3 = 2 * m1 + 1, 2 * m2 + 1, 2 * m3 + 1
    mi = miller_k.astype(jnp.int32)
    return (jnp.mod(mi[:, 0], b1) * b2 + jnp.mod(mi[:, 1], b2)) * b3 + jnp.mod(mi[:, 2], b3)


def pw_to_real(setup: Setup, C, miller_k, mask_k):
    """Plane-wave coefficients ``C [m, npw]`` of one k → ``Σ_G C(G) e^{iG·r} / N`` on the grid ``[m, N1, N2, N3]``.

    Equals ``ifftn`` of the coefficients scattered onto the full grid, computed as three 1-D
    transforms that skip the zero lines outside the sphere's bounding box (the wavefunction
    sphere spans about half of each grid direction, so the first two passes act on ~1/4 and ~1/2
    of the lines).
    """
    m1, m2, m3 = wave_box(setup)
    n1, n2, n3 = setup.basis.fft_shape
    m = C.shape[0]
    box = jnp.zeros((m, (2 * m1 + 1) * (2 * m2 + 1) * (2 * m3 + 1)), C.dtype)
    box = box.at[:, _box_index(setup, miller_k)].add(jnp.where(mask_k[None, :], C, 0.0))
    a = box.reshape(m, 2 * m1 + 1, 2 * m2 + 1, 2 * m3 + 1)
    a = jnp.fft.ifft(_pad_axis(a, 3, m3, n3), axis=3)
    a = jnp.fft.ifft(_pad_axis(a, 2, m2, n2), axis=2)
    return jnp.fft.ifft(_pad_axis(a, 1, m1, n1), axis=1)


def real_to_pw(setup: Setup, A, miller_k):
    """Grid functions ``A [m, N1, N2, N3]`` → their ``fftn`` components on one k's sphere ``[m, npw]``."""
    m1, m2, m3 = wave_box(setup)
    n1, n2, n3 = setup.basis.fft_shape
    a = _crop_axis(jnp.fft.fft(A, axis=1), 1, m1, n1)
    a = _crop_axis(jnp.fft.fft(a, axis=2), 2, m2, n2)
    a = _crop_axis(jnp.fft.fft(a, axis=3), 3, m3, n3)
    return a.reshape(A.shape[0], -1)[:, _box_index(setup, miller_k)]


# ----------------------------------------------------------------------------- states → density/energy
def band_density(setup: Setup, lattice, coeffs_k, occ_k, miller_k, mask_k):
    """``Σ_n f_n |ψ_n(r)|²`` for one k-point, ``[N1,N2,N3]``."""
    ntot = setup.basis.n_grid
    vol = volume(lattice)
    nb = coeffs_k.shape[0]
    chunk = 32  # bands per batched FFT (bounds the memory of large cells)
    if nb <= chunk:
        dens = jnp.abs(pw_to_real(setup, coeffs_k, miller_k, mask_k) * ntot) ** 2
        return jnp.tensordot(occ_k, dens, axes=1) / vol
    pad = (-nb) % chunk
    c = jnp.concatenate([coeffs_k, jnp.zeros((pad, coeffs_k.shape[1]), coeffs_k.dtype)]).reshape(-1, chunk,
                                                                                               coeffs_k.shape[1])
    f = jnp.concatenate([occ_k, jnp.zeros((pad,), occ_k.dtype)]).reshape(-1, chunk)

    def one(cf):
        cc, ff = cf
        return jnp.tensordot(ff, jnp.abs(pw_to_real(setup, cc, miller_k, mask_k) * ntot) ** 2, axes=1)

    return jnp.sum(jax.lax.map(one, (c, f)), 0) / vol


def density(setup: Setup, lattice, coeffs, occ):
    """Symmetrised density ``ρ(r)`` ``[N1,N2,N3]`` [Bohr⁻³] from coefficients ``[nk, nb, npw]``."""
    b = setup.basis
    _, miller, mask, _ = k_arrays(setup, lattice.dtype)
    per_k = kmap(setup, lambda c, f, mil, msk: band_density(setup, lattice, c, f, mil, msk),
                 kshard(setup, coeffs), kshard(setup, occ), miller, mask)
    rho = jnp.tensordot(jnp.asarray(b.weights), per_k, axes=1)
    return symmetrize(setup, rho)


def kinetic_energy(setup: Setup, lattice, coeffs, occ):
    q = kpg(setup, lattice)
    t = 0.5 * jnp.sum(q * q, -1)  # [nk, npw]
    per_band = jnp.sum(jnp.abs(coeffs) ** 2 * t[:, None, :], -1)  # [nk, nb]
    return jnp.sum(jnp.asarray(setup.basis.weights)[:, None] * occ * per_band)


def nonlocal_energy(setup: Setup, lattice, frac, psp, coeffs, occ):
    if not has_nonlocal(setup):
        return jnp.zeros((), lattice.dtype)
    b = setup.basis
    D = projector_coupling(setup, psp)
    vol = volume(lattice)

    def per_k(kpt, miller, mask, c, f):
        P = projector_matrix(setup, lattice, frac, psp, kpt, miller)
        P = jnp.where(mask[:, None], P, 0.0)
        proj = jnp.conj(P).T @ c.T  # [nproj, nb]
        e = jnp.real(jnp.einsum("pn,pq,qn->n", jnp.conj(proj), D, proj)) / vol
        return jnp.sum(f * e)

    kpts, miller, mask, _ = k_arrays(setup, lattice.dtype)
    ek = kmap(setup, per_k, kpts, miller, mask, kshard(setup, coeffs), kshard(setup, occ))
    return jnp.sum(jnp.asarray(b.weights) * ek)


def psp_core_energy(setup: Setup, lattice, psp):
    eps = jax.vmap(pseudo.eps_atm)(psp["zion"], psp["rloc"], psp["c"])  # [S]
    counts = jnp.asarray(setup.species_onehot.sum(1), lattice.dtype)
    return setup.n_electrons * jnp.sum(counts * eps) / volume(lattice)


def ion_charges(setup: Setup, psp):
    return psp["zion"][jnp.asarray(setup.species_of_atom)]


def energy_terms(setup: Setup, lattice, frac, psp, xc_params, coeffs, occ, entropy_term=None, rho_r=None):
    """All energy terms [Ha] as a dict (keys :data:`ENERGY_TERMS`) from coefficients and occupations.

    ``entropy_term`` (−σS) is passed in: it depends on the eigenvalues, not on the state.
    ``rho_r`` optionally supplies the density of ``(coeffs, occ)`` when it is already known (it saves
    the band FFTs; not for derivatives, which must see the density as a function of the lattice).
    """
    if rho_r is None:
        rho_r = density(setup, lattice, coeffs, occ)
    rho_g = to_g(setup, rho_r)
    vloc_g = local_potential_g(setup, lattice, frac, psp)
    vol = volume(lattice)
    terms = {
        "kinetic": kinetic_energy(setup, lattice, coeffs, occ),
        "local": vol * jnp.real(jnp.sum(jnp.conj(rho_g) * vloc_g)),
        "nonlocal": nonlocal_energy(setup, lattice, frac, psp, coeffs, occ),
        "hartree": hartree_energy(setup, lattice, rho_g),
        "xc": xc_energy(setup, lattice, rho_r, xc_params),
        "ewald": ewald_energy(lattice, frac, ion_charges(setup, psp), setup.ewald),
        "psp_core": psp_core_energy(setup, lattice, psp),
        "entropy": jnp.zeros((), lattice.dtype) if entropy_term is None else entropy_term,
    }
    return terms


def total_energy(setup: Setup, lattice, frac, psp, xc_params, coeffs, occ, entropy_term=None):
    """Total (free) energy [Ha]; differentiable w.r.t. lattice, positions and parameters."""
    t = energy_terms(setup, lattice, frac, psp, xc_params, coeffs, occ, entropy_term)
    return sum(t.values())


def occupations(setup: Setup, eigenvalues):
    """Occupations, Fermi level and −σS from eigenvalues ``[nk, nb]``."""
    return smearing_mod.occupations(setup.smearing, setup.width, eigenvalues,
                                    jnp.asarray(setup.basis.weights), setup.n_electrons)
