"""Plane-wave DFT building blocks: analytic transforms against quadrature, XC and smearing identities,
symmetry reduction, supercell consistency, eigensolvers, derivatives against finite differences, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import erf, eval_legendre, gamma, spherical_jn

from difcrys.crystal import Crystal, supercell
from difcrys.dft import derivatives, pseudo, smearing, xc
from difcrys.dft import terms as T
from difcrys.dft.scf import prepare, run_scf
from difcrys.errors import ConfigError, PseudopotentialError, StructureError
from difcrys.units import BOHR_ANG

A_SI = 10.26  # Bohr
FCC = np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])


def si2(frac=((0, 0, 0), (0.25, 0.25, 0.25)), lattice=None):
    lat = FCC * A_SI if lattice is None else np.asarray(lattice)
    return Crystal.create([14, 14], np.asarray(frac), lat * BOHR_ANG)


# ----------------------------------------------------------------------------- pseudopotential transforms
@pytest.mark.parametrize("l,i", [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 1)])
def test_projector_fourier_transform_matches_quadrature(l, i):
    """P_il(q) = 4π ∫ r² p_i^l(r) j_l(qr) dr with the HGH98 Eq. 3 projector."""
    rl = 0.45

    def p(r):
        nu = l + (4 * i - 1) / 2
        return math.sqrt(2) * r ** (l + 2 * (i - 1)) * math.exp(-r * r / (2 * rl * rl)) / (rl**nu * math.sqrt(gamma(nu)))

    for q in (0.2, 1.3, 3.7):
        ref = 4 * math.pi * quad(lambda r: r * r * p(r) * spherical_jn(l, q * r), 0, 25, limit=200)[0]
        ours = float(pseudo.projector_radial(l, i, q * q, rl)) * q**l
        assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_local_form_factor_matches_quadrature():
    """Ω v_loc(q) = 4π ∫ r² V_loc(r) sin(qr)/(qr) dr with V_loc of GTH96 Eq. 1 (Si parameters)."""
    z, rl, c = 4.0, 0.44, np.array([-7.33610297, 0.3, -0.1, 0.01])

    def v_short(r):  # V_loc + Z erf(r/√2 r_l)/r is short ranged
        x = r / rl
        return math.exp(-x * x / 2) * (c[0] + c[1] * x**2 + c[2] * x**4 + c[3] * x**6)

    for q in (0.3, 1.1, 2.9):
        short = 4 * math.pi * quad(lambda r: r * r * v_short(r) * math.sin(q * r) / (q * r), 0, 20, limit=200)[0]
        coulomb = -4 * math.pi * z / q**2 * math.exp(-(q * rl) ** 2 / 2)  # FT of −Z erf(r/√2 r_l)/r
        ours = float(pseudo.local_form_factor(jnp.array(q * q), z, rl, jnp.asarray(c)))
        assert ours == pytest.approx(short + coulomb, rel=1e-9)
    # psp_core: lim_{q→0} [Ω v_loc + 4πZ/q²]
    q = 1e-4
    lim = float(pseudo.local_form_factor(jnp.array(q * q), z, rl, jnp.asarray(c))) + 4 * math.pi * z / q**2
    assert float(pseudo.eps_atm(z, rl, jnp.asarray(c))) == pytest.approx(lim, rel=1e-6)


def test_solid_harmonics_addition_theorem():
    rng = np.random.default_rng(0)
    for _ in range(5):
        u, v = rng.normal(size=3), rng.normal(size=3)
        for l in range(4):
            a = np.asarray(pseudo.solid_harmonics(l, jnp.asarray(u)))
            b = np.asarray(pseudo.solid_harmonics(l, jnp.asarray(v)))
            cos = u @ v / np.linalg.norm(u) / np.linalg.norm(v)
            ref = (2 * l + 1) / (4 * math.pi) * eval_legendre(l, cos) * (np.linalg.norm(u) * np.linalg.norm(v)) ** l
            assert a @ b == pytest.approx(ref, rel=1e-12, abs=1e-14)


# ----------------------------------------------------------------------------- XC and smearing
def test_lda_teter_matches_pw92_ceperley_alder():
    """Both are fits of the Ceperley–Alder correlation energy: within 1 mHa per electron for 0.5 ≤ r_s ≤ 5."""
    rs = jnp.linspace(0.5, 5.0, 40)
    rho = 3 / (4 * jnp.pi * rs**3)
    d = xc.eps_teter(rho) - xc.eps_pw92(rho)
    assert float(jnp.max(jnp.abs(d))) < 1e-3


def test_pbe_reduces_to_lda_for_uniform_density():
    rho = jnp.array([0.001, 0.01, 0.1, 1.0])
    lda = xc.eps_x_lda(rho) + xc.eps_c_pw92(rho, xc.PW92_MOD_PARAMS)
    assert np.allclose(xc.eps_pbe(rho, jnp.zeros_like(rho)), lda, rtol=1e-12)
    # exchange enhancement bounded by 1 + κ (Lieb–Oxford): large gradients
    big = xc.eps_pbe(rho, 1e6 * jnp.ones_like(rho))
    assert np.all(np.asarray(big) < 0)


def test_xc_potential_is_functional_derivative():
    setup, params = prepare(si2(), 4.0, (1, 1, 1), symmetry=False)
    rho = jnp.asarray(np.random.default_rng(1).uniform(0.01, 0.05, setup.basis.fft_shape))
    v, _ = T.xc_potential(setup, params["lattice"], rho, params["xc"])
    dv = float(T.volume(params["lattice"])) / setup.basis.n_grid
    direction = jnp.asarray(np.random.default_rng(2).normal(size=rho.shape)) * 1e-3
    h = 1e-3
    e = lambda r: T.xc_energy(setup, params["lattice"], r, params["xc"])
    fd = (e(rho + h * direction) - e(rho - h * direction)) / (2 * h)
    assert float(jnp.sum(v * direction) * dv) == pytest.approx(float(fd), rel=1e-7)


@pytest.mark.parametrize("kind", ["fermi-dirac", "gaussian", "cold", "cold-a"])
def test_smearing_entropy_identity(kind):
    """s'(x) = x f'(x), f(−∞) = 1, f(∞) = 0 (variational free energy)."""
    x = jnp.linspace(-4, 4, 81)
    fp = jax.vmap(jax.grad(lambda t: smearing.occupation(kind, t)))(x)
    sp = jax.vmap(jax.grad(lambda t: smearing.entropy(kind, t)))(x)
    assert np.allclose(sp, x * fp, atol=1e-12)
    assert float(smearing.occupation(kind, -30.0)) == pytest.approx(1.0)
    assert float(smearing.occupation(kind, 30.0)) == pytest.approx(0.0, abs=1e-12)


def test_fermi_level_counts_electrons():
    eig = jnp.asarray(np.random.default_rng(3).uniform(-0.5, 0.5, (5, 8)))
    w = jnp.ones(5) / 5
    for kind in ("fermi-dirac", "gaussian", "cold"):
        occ, mu, _ = smearing.occupations(kind, 0.01, eig, w, 7.0)
        assert float(jnp.sum(w[:, None] * occ)) == pytest.approx(7.0, abs=1e-9)


# ----------------------------------------------------------------------------- whole-SCF properties
@pytest.fixture(scope="module")
def si_sym():
    return run_scf(si2(), 6.0, (2, 2, 2), tol=1e-11, rho_tol=1e-9, progress=False)


def test_symmetry_reduction_equals_full_grid(si_sym):
    full = run_scf(si2(), 6.0, (2, 2, 2), symmetry=False, fft_shape=si_sym.setup.basis.fft_shape, tol=1e-11,
                   rho_tol=1e-9, progress=False)
    assert len(si_sym.kpoints) < len(full.kpoints)
    assert si_sym.energy == pytest.approx(full.energy, abs=1e-9)


def test_lobpcg_matches_dense(si_sym):
    it = run_scf(si2(), 6.0, (2, 2, 2), tol=1e-11, rho_tol=1e-9, eigensolver="lobpcg", progress=False)
    assert it.energy == pytest.approx(si_sym.energy, abs=1e-8)
    occ = int(si_sym.setup.n_electrons // 2)
    assert np.allclose(it.eigenvalues[:, :occ], si_sym.eigenvalues[:, :occ], atol=1e-6)


def test_lobpcg_real_and_complex_kpoints_match_dense():
    """3×3×3 grid: Γ is time-reversal invariant (real-subspace LOBPCG, two bands per FFT), the other
    irreducible points are general (complex LOBPCG); both paths against dense diagonalisation."""
    from difcrys.dft.eigensolvers import real_k_pairs

    crystal = si2(DISPLACED)
    kw = dict(tol=1e-11, rho_tol=1e-9, progress=False, symmetry=False)
    dense = run_scf(crystal, 6.0, (3, 3, 3), eigensolver="dense", **kw)
    it = run_scf(crystal, 6.0, (3, 3, 3), eigensolver="lobpcg", **kw)
    basis = it.setup.basis
    pairs = real_k_pairs(basis)
    assert sorted(pairs) == [i for i, k in enumerate(basis.kpts) if np.allclose(2 * k, np.rint(2 * k))]
    assert 0 < len(pairs) < len(basis.kpts)
    occ = int(dense.setup.n_electrons // 2)
    assert it.energy == pytest.approx(dense.energy, abs=1e-8)
    assert np.allclose(it.eigenvalues[:, :occ + 1], dense.eigenvalues[:, :occ + 1], atol=1e-6)
    for ik, pair in pairs.items():  # the real-subspace states satisfy C(-G-G0) = conj C(G)
        k, mil, msk = basis.kpts[ik], np.asarray(basis.miller[ik]), np.asarray(basis.mask[ik])
        assert np.allclose((mil[pair] + mil + np.rint(2 * k))[msk], 0)
        c = np.asarray(it.coeffs[ik, :occ])
        assert np.allclose(c[:, pair], np.conj(c), atol=1e-12)


def test_supercell_energy_is_extensive():
    """Si2 on a 2×2×2 grid vs its 2×2×1 supercell (8 atoms) on the folded 1×1×2 grid: 4× the energy."""
    prim = si2()
    res1 = run_scf(prim, 5.0, (2, 2, 2), fft_shape=(18, 18, 18), tol=1e-11, rho_tol=1e-9, progress=False)
    sc = supercell(prim, np.diag([2, 2, 1]))
    res4 = run_scf(sc, 5.0, (1, 1, 2), fft_shape=(36, 36, 18), tol=1e-11, rho_tol=1e-9, progress=False)
    assert res4.energy == pytest.approx(4 * res1.energy, abs=1e-6)


# ----------------------------------------------------------------------------- derivatives vs finite differences
DISPLACED = ((0.01, -0.02, 0.0), (0.25, 0.27, 0.24))
TRICLINIC = np.array([[0.05, 5.13, 5.13], [5.13, -0.03, 5.13], [5.13, 5.13, 0.1]])


def test_forces_match_finite_differences():
    crystal = si2(DISPLACED, TRICLINIC)
    kw = dict(symmetry=False, tol=1e-13, rho_tol=1e-10, progress=False)
    setup, params = prepare(crystal, 5.0, (1, 1, 1), symmetry=False)
    res = run_scf(setup=setup, params=params, **kw)
    f = np.asarray(derivatives.raw_forces_au(res))
    h = 1e-3  # Bohr
    L = np.asarray(params["lattice"])
    for atom, d in ((0, 0), (1, 2)):
        e = []
        for s in (1, -1):
            cart = np.asarray(params["frac"]) @ L
            cart[atom, d] += s * h
            p = dict(params, frac=jnp.asarray(cart @ np.linalg.inv(L)))
            e.append(run_scf(setup=setup, params=p, **kw).energy)
        fd = -(e[0] - e[1]) / (2 * h)
        assert f[atom, d] == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_stress_matches_finite_differences():
    """Fixed-basis stress: the strained runs keep the Miller indices of the reference basis."""
    crystal = si2(DISPLACED, TRICLINIC)
    kw = dict(tol=1e-13, rho_tol=1e-10, progress=False)
    setup, params = prepare(crystal, 5.0, (1, 1, 1), symmetry=False)
    res = run_scf(setup=setup, params=params, **kw)
    sigma = np.asarray(derivatives.stress_au(res))
    vol = float(T.volume(params["lattice"]))
    h = 1e-4
    for i, j in ((0, 0), (1, 2)):
        e = []
        for s in (1, -1):
            eps = np.zeros((3, 3))
            eps[i, j] += s * h / 2
            eps[j, i] += s * h / 2
            p = dict(params, lattice=params["lattice"] @ (jnp.eye(3) + eps))
            e.append(run_scf(setup=setup, params=p, **kw).energy)
        fd = (e[0] - e[1]) / (2 * h) / vol
        assert sigma[i, j] == pytest.approx(fd, rel=1e-5, abs=1e-10)
    # the single backward pass of `difcrys scf --forces --stress` gives the same two derivatives
    f_both, s_both = derivatives.forces_and_stress_au(res)
    assert np.allclose(s_both, sigma, rtol=1e-10, atol=1e-14)
    assert np.allclose(f_both, derivatives.forces_au(res), rtol=1e-10, atol=1e-14)


def test_forces_vanish_by_symmetry_and_sum_to_zero(si_sym):
    f = np.asarray(derivatives.forces_au(si_sym))
    assert np.all(np.isfinite(f))
    assert np.max(np.abs(f)) < 1e-10
    s = np.asarray(derivatives.stress(si_sym))
    assert np.allclose(s, s[0, 0] * np.eye(3), atol=1e-8)  # cubic: isotropic


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ConfigError, match="ecut"):
        prepare(si2(), 0.0, (1, 1, 1))
    with pytest.raises(ConfigError, match="k-point grid"):
        prepare(si2(), 5.0, (0, 1, 1))
    with pytest.raises(ConfigError, match="odd number of valence electrons"):
        prepare(Crystal.create([13], [[0, 0, 0]], FCC * 7.6 * BOHR_ANG), 5.0, (2, 2, 2))
    with pytest.raises(ConfigError, match="too few bands"):
        prepare(si2(), 5.0, (1, 1, 1), n_bands=2)
    with pytest.raises(PseudopotentialError, match="Fr"):
        prepare(Crystal.create([87, 87], [[0, 0, 0], [0.5, 0.5, 0.5]], np.eye(3) * 5.0), 5.0, (1, 1, 1))
    with pytest.raises(StructureError, match="overlapping"):
        prepare(si2(((0, 0, 0), (0.01, 0.0, 0.0))), 5.0, (1, 1, 1))
    with pytest.raises(ConfigError, match="smearing"):
        prepare(si2(), 5.0, (1, 1, 1), smearing="fermi-dirac", width=0.0)


def test_tetrahedron_dos_free_electrons():
    """Linear tetrahedron DOS of ε(k) = |k|²/2 (simple cubic, a = 1 Bohr) equals g(E) = Ω√(2E)/π² inside the BZ."""
    from difcrys.dft.bandstructure import dos_gaussian, dos_tetrahedron
    from difcrys.dft.kpoints import monkhorst_pack

    mesh = (20, 20, 20)
    k = monkhorst_pack(mesh)  # fractional, folded into [-1/2, 1/2)
    eps = 0.5 * np.sum((2 * np.pi * k) ** 2, 1)[:, None]
    E = np.linspace(0.8, 3.5, 10)
    g = dos_tetrahedron(eps, mesh, E)
    assert np.allclose(g, np.sqrt(2 * E) / np.pi**2, rtol=0.04)
    # both DOS integrate to 2 states (spin) per band
    Ef = np.linspace(eps.min() - 0.5, eps.max() + 0.5, 1500)
    assert np.trapezoid(dos_tetrahedron(eps, mesh, Ef), Ef) == pytest.approx(2.0, rel=1e-3)
    w = np.full(len(k), 1 / len(k))
    assert np.trapezoid(dos_gaussian(eps, w, Ef, 0.05), Ef) == pytest.approx(2.0, rel=1e-3)


@pytest.mark.parametrize("mesh,shift", [((4, 4, 4), (0, 0, 0)), ((4, 4, 4), (0.5, 0.5, 0.5)), ((3, 3, 2), (0, 0, 0.5))])
def test_dft_kpoint_reduction_agrees_with_symmetry_module(mesh, shift):
    """The DFT's reduction (which also returns the operations used to symmetrise ρ) and
    difcrys.symmetry.irreducible_kpoints give the same number of points and the same weights."""
    from difcrys import symmetry
    from difcrys.dft.kpoints import reduce_kpoints
    from difcrys.dft.scf import _symmetry_ops

    c = si2()
    rots, _ = _symmetry_ops(c)
    k1, w1, _ = reduce_kpoints(mesh, shift, rots)
    k2, w2 = symmetry.irreducible_kpoints(c, mesh, shift)
    assert len(k1) == len(k2)
    assert np.allclose(np.sort(w1), np.sort(w2))
