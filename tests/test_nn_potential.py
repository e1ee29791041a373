"""Equivariant potential: symmetries of E/F/σ, forces and stress = finite differences, smooth cutoff,
fitted statistics, bad input."""

import jax
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from difcrys.crystal import Crystal, supercell
from difcrys.errors import ConfigError, ElementError, StructureError
from difcrys.nn.potential import Potential, PotentialConfig, fit_statistics, polynomial_envelope
from difcrys.units import EV_PER_ANG3_GPA


@pytest.fixture(scope="module")
def model():
    cfg = PotentialConfig(species=["Si", "O"], cutoff=3.2, num_layers=2, l_max=2, channels=4, n_radial=4,
                          radial_hidden=8, avg_num_neighbors=8.0, shift=(-4.0, -2.0), scale=0.7,
                          dtype="float64")
    pot = Potential(cfg)
    return pot, pot.init(jax.random.PRNGKey(1))


@pytest.fixture(scope="module")
def crystal():
    rng = np.random.default_rng(0)
    lattice = np.array([[3.9, 0.1, 0.2], [0.3, 4.1, -0.1], [0.2, -0.2, 3.8]])
    frac = np.array([[0.0, 0.0, 0.0], [0.26, 0.24, 0.27], [0.5, 0.52, 0.03], [0.74, 0.77, 0.49]])
    frac = frac + 0.02 * rng.standard_normal(frac.shape)
    return Crystal.create([14, 8, 14, 8], frac, lattice)


def test_rotation_translation_invariance_and_equivariance(model, crystal):
    pot, params = model
    ref = pot.compute(params, crystal)
    R = Rotation.random(random_state=3).as_matrix()
    rot = Crystal.create(crystal.numbers, crystal.frac, np.asarray(crystal.lattice) @ R.T)
    out = pot.compute(params, rot)
    np.testing.assert_allclose(out["energy"], ref["energy"], rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(out["forces"], ref["forces"] @ R.T, atol=1e-10)
    np.testing.assert_allclose(out["stress"], R @ ref["stress"] @ R.T, atol=1e-9)
    # translation (also across the periodic boundary)
    tr = Crystal.create(crystal.numbers, np.asarray(crystal.frac) + np.array([0.37, -0.81, 0.55]),
                        crystal.lattice)
    out = pot.compute(params, tr)
    np.testing.assert_allclose(out["energy"], ref["energy"], rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(out["forces"], ref["forces"], atol=1e-10)


def test_permutation_and_supercell(model, crystal):
    pot, params = model
    ref = pot.compute(params, crystal)
    perm = np.array([2, 0, 3, 1])
    pc = Crystal.create(np.asarray(crystal.numbers)[perm], np.asarray(crystal.frac)[perm], crystal.lattice)
    out = pot.compute(params, pc)
    np.testing.assert_allclose(out["energy"], ref["energy"], rtol=1e-12)
    np.testing.assert_allclose(out["forces"], ref["forces"][perm], atol=1e-10)
    sc = supercell(crystal, np.diag([2, 1, 2]))
    out = pot.compute(params, sc)
    np.testing.assert_allclose(out["energy"], 4 * ref["energy"], rtol=1e-11)
    np.testing.assert_allclose(out["stress"], ref["stress"], atol=1e-9)
    n = crystal.n_atoms
    # supercell atoms: the images of each atom follow each other (Crystal.supercell order)
    np.testing.assert_allclose(np.asarray(out["forces"]).reshape(n, 4, 3),
                               np.broadcast_to(ref["forces"][:, None], (n, 4, 3)), atol=1e-10)


def test_forces_and_stress_are_finite_differences(model, crystal):
    pot, params = model
    ref = pot.compute(params, crystal)
    g = pot.graph(crystal)  # fixed edge set: no pair crosses the cutoff for these small steps
    lat = np.asarray(crystal.lattice)
    pos = np.asarray(crystal.positions)

    e_jit = jax.jit(lambda p, L: pot.energy_from_positions(params, crystal.numbers, p, L, crystal.mask, g))

    def energy(p, L):
        return float(e_jit(p, L))

    h = 1e-5
    for (a, k) in [(0, 0), (1, 2), (3, 1)]:
        dp = np.zeros_like(pos)
        dp[a, k] = h
        fd = -(energy(pos + dp, lat) - energy(pos - dp, lat)) / (2 * h)
        assert fd == pytest.approx(ref["forces"][a, k], abs=1e-7)
    vol = abs(np.linalg.det(lat))
    for (i, j) in [(0, 0), (1, 2), (2, 0)]:
        eps = np.zeros((3, 3))
        eps[i, j] = eps[j, i] = h / 2 if i != j else h
        d = np.eye(3)
        ep = energy(pos @ (d + eps), lat @ (d + eps))
        em = energy(pos @ (d - eps), lat @ (d - eps))
        fd = (ep - em) / (2 * h) / vol * EV_PER_ANG3_GPA
        assert fd == pytest.approx(ref["stress"][i, j], abs=1e-6 * max(1.0, abs(fd)))


@pytest.mark.slow
def test_smooth_cutoff_dimer(model):
    pot, params = model
    rc = pot.config.cutoff
    es = []
    for d in (rc - 1e-4, rc + 1e-4):
        c = Crystal.from_cartesian([14, 14], [[0, 0, 0], [d, 0, 0]], np.eye(3) * 20.0)
        es.append(pot.compute(params, c))
    # energy continuous across the cutoff; beyond it the atoms are isolated (E = 2 E_atom)
    single = pot.compute(params, Crystal.from_cartesian([14], [[0, 0, 0]], np.eye(3) * 20.0))
    assert es[0]["energy"] == pytest.approx(es[1]["energy"], abs=1e-8)
    assert es[1]["energy"] == pytest.approx(2 * single["energy"], abs=1e-12)
    assert np.abs(es[0]["forces"]).max() < 1e-6
    x = np.linspace(0.9, 1.0, 11)
    assert np.all(np.diff(np.asarray(polynomial_envelope(x))) <= 0)
    assert float(polynomial_envelope(1.0)) == 0.0


@pytest.mark.slow
def test_float32_model_matches_float64(model, crystal):
    pot64, params64 = model
    cfg32 = PotentialConfig(**{**pot64.config.__dict__, "dtype": "float32"})
    pot32 = Potential(cfg32)
    params32 = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params64)
    e32 = pot32.compute(params32, crystal)
    e64 = pot64.compute(params64, crystal)
    assert e32["energy"].dtype == np.float32
    assert e32["energy"] == pytest.approx(e64["energy"], rel=1e-5)
    np.testing.assert_allclose(e32["forces"], e64["forces"], atol=1e-4)


def test_fit_statistics_recovers_composition_energies():
    from difcrys.data import Dataset

    rng = np.random.default_rng(0)
    crystals, energies = [], []
    for k in range(6):
        n_si, n_o = 1 + k % 3, 1 + (k * 2) % 3
        n = n_si + n_o
        frac = (np.arange(n)[:, None] * np.array([0.13, 0.37, 0.21])) % 1.0
        crystals.append(Crystal.create([14] * n_si + [8] * n_o, frac, np.eye(3) * (6.0 + 0.1 * k)))
        energies.append(-5.2 * n_si - 3.1 * n_o + 1e-3 * rng.standard_normal())
    ds = Dataset(crystals, energy=energies)
    cfg = fit_statistics(PotentialConfig(species=["Si", "O"], cutoff=3.0), ds)
    np.testing.assert_allclose(cfg.shift, [-5.2, -3.1], atol=5e-3)
    assert cfg.avg_num_neighbors >= 1.0


def test_bad_input(model, crystal):
    pot, params = model
    fe = Crystal.create([26, 8, 14, 8], crystal.frac, crystal.lattice)
    with pytest.raises(ElementError, match="Fe.*not seen in training"):
        pot.compute(params, fe)
    close = Crystal.create([14, 14], [[0, 0, 0], [0.01, 0, 0]], np.eye(3) * 4.0, validate=False)
    with pytest.raises(StructureError):
        pot.compute(params, close)
    with pytest.raises(ConfigError, match="l_max"):
        PotentialConfig(species=["Si"], l_max=-1)
    with pytest.raises(ConfigError, match="species"):
        PotentialConfig(species=["Xx"])
    with pytest.raises(ConfigError, match="unknown model option"):
        PotentialConfig.from_dict({"species": ["Si"], "chanels": 3})


def test_dpmd_baseline_symmetries_and_forces(crystal):
    """DeepPot-SE baseline: rotation/permutation invariance and forces = −∂E/∂C (finite differences)."""
    cfg = PotentialConfig(species=["Si", "O"], cutoff=3.2, kind="dpmd", channels=8, axis_neurons=4,
                          radial_hidden=16, avg_num_neighbors=8.0, dtype="float64", scale=0.5)
    pot = Potential(cfg)
    params = pot.init(jax.random.PRNGKey(2))
    assert "fit_out" in params["params"]
    ref = pot.compute(params, crystal)
    R = Rotation.random(random_state=7).as_matrix()
    perm = np.array([3, 1, 0, 2])
    moved = Crystal.create(np.asarray(crystal.numbers)[perm], np.asarray(crystal.frac)[perm],
                           np.asarray(crystal.lattice) @ R.T)
    out = pot.compute(params, moved)
    assert out["energy"] == pytest.approx(ref["energy"], rel=1e-12)
    np.testing.assert_allclose(out["forces"], ref["forces"][perm] @ R.T, atol=1e-10)
    g = pot.graph(crystal)
    e = jax.jit(lambda p: pot.energy_from_positions(params, crystal.numbers, p, crystal.lattice, crystal.mask, g))
    pos = np.asarray(crystal.positions)
    d = np.zeros_like(pos)
    d[2, 1] = 1e-5
    fd = -(float(e(pos + d)) - float(e(pos - d))) / 2e-5
    assert fd == pytest.approx(ref["forces"][2, 1], abs=1e-7)
    assert abs(ref["forces"][2, 1]) > 1e-4
