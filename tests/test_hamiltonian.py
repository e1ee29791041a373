"""Hamiltonian network (difcrys.nn.hamiltonian): symmetry of the predicted blocks, float64."""

import jax
import numpy as np
import pytest

import difcrys  # noqa: F401  (x64)
from difcrys.crystal import Crystal
from difcrys.nn.hamiltonian import HamiltonianConfig, HamiltonianModel, reverse_edges
from difcrys.tb import BasisError, eigenvalues, wigner_d_atom

# Two species with different shells to exercise padding. Default: C (s, p) and Si (s only), a
# small network (fast to compile); slow: Si with s, p, d shells (l = 2 blocks, SH up to l = 4).
SETTINGS = {
    "small": dict(basis={"C": "1s1p", "Si": "1s"}, num_layers=2, l_max=1, channels=2, n_radial=3, radial_hidden=4),
    "spd": dict(basis={"C": "1s1p", "Si": "1s1p1d"}, num_layers=2, l_max=2, channels=4, n_radial=4,
                radial_hidden=8),
}
SHELLS = {"small": {6: (0, 1), 14: (0,)}, "spd": {6: (0, 1), 14: (0, 1, 2)}}


@pytest.fixture(scope="module", params=["small", pytest.param("spd", marks=pytest.mark.slow)])
def setup(request):
    cfg = HamiltonianConfig(cutoff=3.6, dtype="float64", **SETTINGS[request.param])
    model = HamiltonianModel(cfg)
    params = model.init(jax.random.PRNGKey(0))
    # perturb all parameters so that every path is active
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree_util.tree_unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape, x.dtype)
                                                 for x, k in zip(leaves, keys)])
    rng = np.random.default_rng(0)
    lat = np.array([[3.9, 0.2, 0.0], [0.4, 4.1, 0.1], [0.1, -0.2, 4.3]])
    frac = np.array([[0.0, 0.0, 0.0], [0.26, 0.24, 0.27], [0.5, 0.52, 0.03], [0.74, 0.23, 0.5],
                     [0.1, 0.6, 0.55]]) + rng.normal(0, 0.01, (5, 3))
    numbers = np.array([6, 14, 6, 14, 6])
    crystal = Crystal(numbers=numbers, frac=frac, lattice=lat, mask=np.ones(5, bool))
    return model, params, crystal, request.param


def blocks_dict(op):
    """{(i, j, R): (H, S)} of unpadded blocks."""
    out = {}
    for p, ((i, j), R) in enumerate(zip(op.pairs, op.shifts)):
        oi, oj = op.orbitals[i], op.orbitals[j]
        out[(int(i), int(j), tuple(int(x) for x in R))] = (op.H[p, :oi, :oj], op.S[p, :oi, :oj])
    return out


def test_rotation_rotates_blocks_by_wigner_d(setup):
    from scipy.spatial.transform import Rotation

    model, params, c, name = setup
    op = model.predict_operator(params, c)
    R = Rotation.random(random_state=7).as_matrix()
    rot = Crystal(numbers=c.numbers, frac=c.frac, lattice=np.asarray(c.lattice) @ R.T, mask=c.mask)
    op2 = model.predict_operator(params, rot)
    b1, b2 = blocks_dict(op), blocks_dict(op2)
    assert set(b1) == set(b2) and len(b1) > 30
    shells = SHELLS[name]
    Ds = {z: wigner_d_atom(s, R) for z, s in shells.items()}
    num = np.asarray(c.numbers)
    scale = max(np.abs(h).max() for h, _ in b1.values())
    assert scale > 1e-3
    for (i, j, T), (h, s) in b1.items():
        Di, Dj = Ds[int(num[i])], Ds[int(num[j])]
        np.testing.assert_allclose(b2[(i, j, T)][0], Di @ h @ Dj.T, atol=1e-10 * scale)
        np.testing.assert_allclose(b2[(i, j, T)][1], Di @ s @ Dj.T, atol=1e-10)
    # improper operation (inversion): blocks pick up (-1)^(l1 + l2)
    inv = Crystal(numbers=c.numbers, frac=-np.asarray(c.frac), lattice=np.asarray(c.lattice), mask=c.mask)
    b3 = blocks_dict(model.predict_operator(params, inv))
    par = {z: np.concatenate([np.full(2 * l + 1, (-1.0) ** l) for l in sh]) for z, sh in shells.items()}
    for (i, j, T), (h, _) in b1.items():
        Pi, Pj = par[int(num[i])], par[int(num[j])]
        np.testing.assert_allclose(b3[(i, j, tuple(-x for x in T))][0], Pi[:, None] * h * Pj[None, :],
                                   atol=1e-10 * scale)


def test_hermiticity_is_exact(setup):
    model, params, c, _ = setup
    op = model.predict_operator(params, c)
    assert op.check_hermitian(atol=0.0) == 0.0
    Hk = np.asarray(op.bloch([[0.13, 0.31, -0.2]], "H"))[0]
    assert np.abs(Hk - Hk.conj().T).max() < 1e-13


def test_permutation_and_translation_invariance(setup):
    model, params, c, _ = setup
    op = model.predict_operator(params, c)
    b = blocks_dict(op)
    perm = np.array([3, 0, 4, 1, 2])  # new atom a is old atom perm[a]
    pc = Crystal(numbers=np.asarray(c.numbers)[perm], frac=np.asarray(c.frac)[perm], lattice=c.lattice, mask=c.mask)
    bp = blocks_dict(model.predict_operator(params, pc))
    for (a, bb, T), (h, s) in bp.items():
        np.testing.assert_allclose(h, b[(int(perm[a]), int(perm[bb]), T)][0], atol=1e-12)
    # translation by a vector that wraps atoms through the cell: spectra are unchanged
    shift = np.array([0.37, -0.61, 0.9])
    tc = Crystal(numbers=c.numbers, frac=np.mod(np.asarray(c.frac) + shift, 1.0), lattice=c.lattice, mask=c.mask)
    opt = model.predict_operator(params, tc)
    k = [[0.0, 0.0, 0.0], [0.21, -0.33, 0.4]]
    np.testing.assert_allclose(eigenvalues(opt, k, s_min=0.0), eigenvalues(op, k, s_min=0.0), atol=1e-9)


def test_missing_basis_element_raises(setup):
    model, params, c, _ = setup
    bad = Crystal(numbers=np.array([6, 8, 6, 14, 6]), frac=c.frac, lattice=c.lattice, mask=c.mask)
    with pytest.raises(BasisError, match="no orbital basis for element O"):
        model.predict_operator(params, bad)


def test_reverse_edges():
    s = np.array([0, 1, 0, 1, 2])
    r = np.array([1, 0, 1, 0, 2])
    S = np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 0]])
    m = np.array([True, True, True, True, False])
    np.testing.assert_array_equal(reverse_edges(s, r, S, m), [1, 0, 3, 2, 4])


@pytest.mark.slow
def test_tiled_prediction_equals_direct():
    """Large-system prediction by tiles with halos gives the same blocks as one direct pass."""
    cfg = HamiltonianConfig(basis={"C": "1s1p"}, cutoff=2.0, num_layers=2, l_max=1, channels=2, n_radial=3,
                            radial_hidden=4, dtype="float64")
    model = HamiltonianModel(cfg)
    params = model.init(jax.random.PRNGKey(3))
    n = 6
    a1, a2 = np.array([2.46, 0, 0]), np.array([1.23, 2.46 * np.sqrt(3) / 2, 0])
    lat = np.array([n * a1, n * a2, [0, 0, 10.0]])
    rng = np.random.default_rng(1)
    frac = np.array([[(b + i) / n, (b + j) / n, 0.5] for i in range(n) for j in range(n) for b in (0, 1 / 3)])
    frac += rng.normal(0, 0.004, frac.shape)
    c = Crystal(numbers=np.full(len(frac), 6), frac=frac, lattice=lat, mask=np.ones(len(frac), bool))
    direct = blocks_dict(model.predict_operator(params, c))
    tiled_op = model.predict_operator_tiled(params, c, tile=4.0)
    assert tiled_op.meta["n_tiles"] >= 9  # 3 x 3 in-plane (x 2 along z)
    tiled = blocks_dict(tiled_op)
    assert set(tiled) == set(direct)
    for key, (h, s) in direct.items():
        np.testing.assert_allclose(tiled[key][0], h, atol=1e-10)
        np.testing.assert_allclose(tiled[key][1], s, atol=1e-12)


@pytest.mark.slow
def test_train_cli_test_variant_and_bands(tmp_path):
    """`difcrys train` (task: hamiltonian, test variant on the committed PySCF data), resume, then
    `difcrys evaluate` and `difcrys bands` on the run."""
    import json
    import os

    import yaml

    from difcrys.cli import main

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, "experiments/deeph/data/graphene_000.npz")):
        pytest.skip("generated graphene data not present")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        run = str(tmp_path / "run")
        assert main(["train", "configs/hamiltonian_graphene.yaml", "--variant", "test", "--run-dir", run,
                     "--no-resume"]) == 0
        with open(os.path.join(run, "config.yaml")) as fh:
            assert yaml.safe_load(fh)["task"] == "hamiltonian"
        lines = open(os.path.join(run, "metrics.jsonl")).read().splitlines()
        assert len(lines) == 2
        assert main(["train", "configs/hamiltonian_graphene.yaml", "--variant", "test", "--run-dir", run]) == 0
        assert len(open(os.path.join(run, "metrics.jsonl")).read().splitlines()) == 2  # resumed, nothing to do
        out = str(tmp_path / "ev.json")
        assert main(["evaluate", run, "--out", out]) == 0
        res = json.load(open(out))
        assert res["held_out"]["mae_H_meV"] > 0
        png = str(tmp_path / "b.png")
        assert main(["bands", "experiments/deeph/data/graphene_000.npz", "--path", "GMKG", "--points", "20",
                     "--dos-mesh", "6", "6", "1", "--plot", png]) == 0
        assert os.path.getsize(png) > 1000
    finally:
        os.chdir(cwd)
