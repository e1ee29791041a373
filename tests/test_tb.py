"""difcrys.tb: orbital conventions, Bloch sums, generalized eigenproblem, bands, DOS, sparse solver."""

import jax
import numpy as np
import pytest

import difcrys  # noqa: F401  (x64)
from difcrys.crystal import Crystal
from difcrys.tb import (BasisError, BlockShapeError, OrbitalBasis, OverlapError, TBOperator, dos, eigenvalues,
                        eigs_near, fermi_level, from_blocks, source_permutation, wigner_d_atom)

from conftest import require_data

A = 2.46


def graphene(n=1):
    a1, a2 = np.array([A, 0, 0]), np.array([A / 2, A * np.sqrt(3) / 2, 0])
    lat = np.array([n * a1, n * a2, [0, 0, 10.0]])
    frac = [[(b[0] + i) / n, (b[1] + j) / n, 0.5] for i in range(n) for j in range(n) for b in ((0, 0), (1 / 3, 1 / 3))]
    return Crystal(numbers=np.full(2 * n * n, 6), frac=np.array(frac), lattice=lat, mask=np.ones(2 * n * n, bool))


def nn_model(crystal, eps0, t, s, basis="1s"):
    """Nearest-neighbour single-orbital model with on-site eps0, hopping t, overlap s."""
    L = np.asarray(crystal.lattice)
    pos = np.asarray(crystal.frac) @ L
    H, S = {}, {}
    n = len(pos)
    for i in range(n):
        H[(i, i, (0, 0, 0))] = np.array([[eps0]])
        S[(i, i, (0, 0, 0))] = np.array([[1.0]])
        for j in range(n):
            for R in np.ndindex(3, 3):
                R = (R[0] - 1, R[1] - 1, 0)
                d = np.linalg.norm(pos[j] + np.array(R) @ L - pos[i])
                if 1.3 < d < 1.5:
                    H[(i, j, R)] = np.array([[t]])
                    S[(i, j, R)] = np.array([[s]])
    return from_blocks(crystal, OrbitalBasis({"C": basis}), H, S)


def test_p_orbital_order_is_e3nn_jax_xyz():
    """Internal p order (x, y, z): e3nn-jax's l=1 spherical harmonic of r is ∝ (x, y, z) and D¹(R) = R."""
    import e3nn_jax as e3nn
    from scipy.spatial.transform import Rotation

    v = np.array([0.3, -1.2, 0.7])
    y = np.asarray(e3nn.spherical_harmonics("1o", v, normalize=False).array)
    np.testing.assert_allclose(y / np.sqrt(3), v, atol=1e-12)
    R = Rotation.random(random_state=1).as_matrix()
    D = wigner_d_atom((0, 1), R)
    np.testing.assert_allclose(D[1:4, 1:4], R, atol=1e-12)
    np.testing.assert_allclose(D[0, 0], 1.0, atol=1e-12)


def test_source_permutation_maps_deeptb_yzx_to_xyz():
    # a Slater–Koster s–p block E_{s,p_a} = d_a V_spσ written in the (y, z, x) order of DeePTB files
    d = np.array([0.48, -0.6, 0.64])
    src = np.array([d[1], d[2], d[0]])
    perm = source_permutation((0, 1), "yzx")
    full = np.concatenate([[1.0], src])
    np.testing.assert_allclose(full[perm][1:], d)
    assert list(source_permutation((0, 1), "xyz")) == [0, 1, 2, 3]
    with pytest.raises(BasisError):
        source_permutation((0, 1, 2), "yzx")


def test_graphene_bands_match_closed_form_with_overlap():
    """ε±(k) = (ε0 ± t|f|) / (1 ± s|f|), f = Σ_δ e^{ik·δ} (Saito, Dresselhaus & Dresselhaus,
    Physical Properties of Carbon Nanotubes (1998), Eq. 2.26)."""
    eps0, t, s = -0.2, -2.7, 0.12
    op = nn_model(graphene(), eps0, t, s)
    op.check_hermitian()
    rng = np.random.default_rng(0)
    k = np.zeros((7, 3))
    k[:, :2] = rng.uniform(0, 1, (7, 2))
    k[0] = 0.0
    e = eigenvalues(op, k)
    L = np.asarray(op.crystal.lattice)
    pos = np.asarray(op.crystal.frac) @ L
    B = 2 * np.pi * np.linalg.inv(L).T
    f = np.zeros(len(k), complex)
    for R in ((0, 0, 0), (-1, 0, 0), (0, -1, 0)):
        delta = pos[1] + np.array(R) @ L - pos[0]
        assert abs(np.linalg.norm(delta) - A / np.sqrt(3)) < 1e-9
        f += np.exp(1j * (k @ B) @ delta)
    ref = np.sort(np.stack([(eps0 + t * abs(f)) / (1 + s * abs(f)), (eps0 - t * abs(f)) / (1 - s * abs(f))], 1), 1)
    np.testing.assert_allclose(e, ref, atol=1e-10)
    # Dirac point: the two bands touch at K = (1/3, 2/3) at ε0
    eK = eigenvalues(op, [[1 / 3, 2 / 3, 0]])[0]
    np.testing.assert_allclose(eK, [eps0, eps0], atol=1e-10)


def test_sparse_shift_invert_matches_dense_and_supercell_folding():
    op = nn_model(graphene(6), -0.2, -2.7, 0.1)
    dense = eigenvalues(op, [[0, 0, 0]])[0]
    near = eigs_near(op, sigma=0.3, n=10)
    ref = np.sort(dense[np.argsort(np.abs(dense - 0.3))[:10]])
    np.testing.assert_allclose(near, ref, atol=1e-8)
    # Γ of the 6x6 supercell folds the primitive k-points (i/6, j/6)
    prim = nn_model(graphene(1), -0.2, -2.7, 0.1)
    kk = np.array([[i / 6, j / 6, 0] for i in range(6) for j in range(6)])
    np.testing.assert_allclose(np.sort(eigenvalues(prim, kk).ravel()), dense, atol=1e-9)


def test_dos_integrates_to_band_count():
    op = nn_model(graphene(), -0.2, -2.7, 0.0)
    E = np.linspace(-10.00123, 10.00123, 1601)  # off the exact band-edge values
    for method, width in (("gaussian", 0.2), ("tetrahedron", None)):
        e, g = dos(op, mesh=(18, 18, 1), energies=E, method=method, width=width or 0.1)
        integral = np.trapezoid(g, e)
        assert abs(integral - 4.0) < 0.06, (method, integral)  # 2 bands x 2 spins (18x18 mesh: -1% measured)
    # Fermi level of half filling at the Dirac energy (orthogonal model: ε0)
    eg = eigenvalues(op, np.array([[i / 30, j / 30, 0] for i in range(30) for j in range(30)]))
    assert abs(fermi_level(eg, 2.0) - (-0.2)) < 1e-6


def test_bad_input_errors():
    c = graphene()
    basis = OrbitalBasis({"C": "1s1p"})
    with pytest.raises(BlockShapeError, match=r"shape \(1, 4\), expected \(4, 4\)"):
        from_blocks(c, basis, {(0, 1, (0, 0, 0)): np.zeros((1, 4))})
    si = Crystal(numbers=np.array([6, 14]), frac=np.asarray(c.frac), lattice=np.asarray(c.lattice), mask=np.ones(2, bool))
    with pytest.raises(BasisError, match="no orbital basis for element Si"):
        from_blocks(si, basis, {(0, 0, (0, 0, 0)): np.eye(4)})
    with pytest.raises(BasisError):
        OrbitalBasis({"C": "1s1q"})
    # S not positive definite: overlap 0.7 > 1/3 makes 1 - 3s < 0 at Γ
    bad = nn_model(graphene(), 0.0, -2.7, 0.7)
    with pytest.raises(OverlapError, match="not positive definite"):
        eigenvalues(bad, [[0, 0, 0]])
    # missing hermitian partner
    op = nn_model(graphene(), 0.0, -2.7, 0.1)
    keep = np.ones(len(op.pairs), bool)
    keep[np.nonzero(op.pairs[:, 0] != op.pairs[:, 1])[0][0]] = False
    broken = TBOperator(op.crystal, op.basis, op.pairs[keep], op.shifts[keep], op.H[keep], op.S[keep])
    with pytest.raises(BlockShapeError, match="no partner"):
        broken.check_hermitian()


def test_npz_round_trip(tmp_path):
    op = nn_model(graphene(2), -0.2, -2.7, 0.1)
    op.to_npz(tmp_path / "g.npz")
    back = TBOperator.from_npz(tmp_path / "g.npz")
    k = [[0.1, 0.27, 0]]
    np.testing.assert_allclose(eigenvalues(back, k), eigenvalues(op, k), atol=1e-12)


def test_si64_abacus_bands_from_given_h_and_s():
    """The ABACUS Si64 H and S: our Bloch sums and eigen-solver against an independent dense
    NumPy/SciPy solve in the file's own orbital order (eigenvalues do not depend on the order)."""
    import scipy.linalg

    from difcrys.data.hamiltonian import read_hamiltonian_h5

    hd = read_hamiltonian_h5(require_data("deeptb_si64_hamiltonian"))
    op = TBOperator.from_hamiltonian_data(hd)
    assert op.check_hermitian(1e-5) < 1e-5
    k = np.asarray(hd.kpoints)[[0, 7]]
    e = eigenvalues(op, k)
    for kk, ek in zip(k, e):
        ref = scipy.linalg.eigh(hd.bloch(kk, "H"), hd.bloch(kk, "S"), eigvals_only=True)
        np.testing.assert_allclose(ek, ref, atol=1e-8)
    # Γ: 128 occupied bands; the valence band spans ≈ 12.5 eV (Si: ≈ 12 eV)
    vb = e[0, 127] - e[0, 0]
    assert 11.5 < vb < 13.5
    assert 0.5 < e[0, 128] - e[0, 127] < 3.0


def test_generalized_eigvalsh_derivative_matches_finite_differences():
    """Hellmann–Feynman JVP of ε(H, S) against central differences, complex Hermitian H, S."""
    import jax.numpy as jnp

    from difcrys.tb.solve import generalized_eigvalsh

    rng = np.random.default_rng(0)
    n = 6

    def herm(scale):
        a = rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))
        return scale * (a + a.conj().T) / 2

    H, dH = herm(1.0), herm(1.0)
    S, dS = np.eye(n) + herm(0.05), herm(0.05)
    f = lambda t: generalized_eigvalsh(jnp.asarray(H + t * dH), jnp.asarray(S + t * dS))  # noqa: E731
    _, jvp = jax.jvp(f, (0.0,), (1.0,))
    h = 1e-5
    fd = (np.asarray(f(h)) - np.asarray(f(-h))) / (2 * h)
    np.testing.assert_allclose(np.asarray(jvp), fd, atol=1e-7)
    # exactly degenerate levels: the gradient stays finite and the sum over the pair is exact
    Hd = np.diag([0.0, 1.0, 1.0, 2.0, 3.0, 4.0]).astype(complex)
    g = jax.grad(lambda x: jnp.sum(generalized_eigvalsh(jnp.asarray(Hd) + x * jnp.asarray(dH),
                                                        jnp.eye(n, dtype=complex))[1:3]))(0.0)
    w = np.linalg.eigvalsh(dH[1:3, 1:3])
    assert np.isfinite(float(g)) and abs(float(g) - w.sum()) < 1e-10


def test_bands_cli_compare_against_a_reference_operator(tmp_path, capsys):
    """`difcrys bands OPERATOR --compare REF`: band-by-band errors within the window of the
    reference's Fermi level; zero against itself, the truncation error against a truncated copy
    (which must agree with the eigenvalues computed directly), and a clear error for a mismatch."""
    import json
    import os

    from difcrys.cli import main
    from difcrys.symmetry import band_path
    from difcrys.train.hamiltonian import truncate

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full = os.path.join(root, "experiments", "deeph", "data", "graphene_000.npz")
    op = TBOperator.from_npz(full)
    cut = str(tmp_path / "cut.npz")
    truncate(op, 4.5).to_npz(cut)
    args = ["--path", "GMKG", "--points", "15", "--dos-mesh", "3", "3", "1", "--json"]
    assert main(["bands", full, "--compare", full] + args) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["compare_n"] > 20 and res["compare_mae_meV"] == 0.0
    assert main(["bands", cut, "--compare", full, "--plot", str(tmp_path / "c.png")] + args) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    k = band_path(op.crystal, npoints=15, path="GMKG").kpts
    e_full, e_cut = eigenvalues(op, k), eigenvalues(truncate(op, 4.5), k)
    win = np.abs(e_full - res["compare_fermi_level_ev"]) < 2.0
    assert res["compare_n"] == int(win.sum())
    np.testing.assert_allclose(res["compare_mae_meV"], 1000 * np.abs(e_cut - e_full)[win].mean(), rtol=1e-9)
    assert res["compare_mae_meV"] > 1.0  # the 4.5 Å truncation costs tens of meV (README)
    assert os.path.getsize(tmp_path / "c.png") > 1000
    assert main(["bands", full, "--compare", os.path.join(root, "experiments", "deeph", "data", "graphene3_000.npz")]
                + args) == 2
    assert "72 orbitals, the bands have 32" in capsys.readouterr().err
