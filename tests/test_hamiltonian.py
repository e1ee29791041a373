"""Hamiltonian network (difcrys.nn.hamiltonian): symmetry of the predicted blocks, float64."""

import dataclasses

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


SETTINGS["small_2c"] = dict(SETTINGS["small"], two_centre_k=5, edge_product=2, three_body=2, three_body_cutoff=2.9,
                           three_body_max=12, bond_env_k=3, bond_env_kb=3, onsite_product=2)
SHELLS["small_2c"] = SHELLS["small"]


@pytest.fixture(scope="module", params=["small", "small_2c", pytest.param("spd", marks=pytest.mark.slow)])
def setup(request):
    cfg = HamiltonianConfig(cutoff=3.6, dtype="float64", **SETTINGS[request.param])
    if cfg.two_centre_k:  # random two-centre baseline coefficients (every path, both species orders)
        nS, nP = 2, len(HamiltonianModel(cfg).layout.edge_paths)
        rng = np.random.default_rng(5)
        cfg = dataclasses.replace(cfg, two_centre_H=rng.normal(0, 1, (nS * nS, nP, 5)).tolist(),
                                  two_centre_S=rng.normal(0, 0.1, (nS * nS, nP, 5)).tolist(),
                                  two_centre_onsite=rng.normal(0, 1, (nS * nS, nP, 5)).tolist(),
                                  bond_env_H=rng.normal(0, 1, (nS * nS, nP, 2, 3, 3)).tolist())
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


def test_three_body_table_lists_the_other_edges_of_each_sender():
    """In-graph triplet table (edges i → k of the sender of each edge i → j, k ≠ j) against a loop,
    including padding edges and the capacity check on the host."""
    import jax.numpy as jnp

    from difcrys.errors import ConfigError
    from difcrys.nn.hamiltonian import _three_body_table

    rng = np.random.default_rng(3)
    n, E, M = 6, 40, 12
    s = rng.integers(0, n, E)
    m3 = rng.random(E) < 0.7
    s[-4:] = n  # padding edges point at the padding atom
    m3[-4:] = False
    nb, ok = _three_body_table(jnp.asarray(s), jnp.asarray(m3), n, M)
    nb, ok = np.asarray(nb), np.asarray(ok)
    for e in range(E - 4):
        want = {f for f in range(E) if s[f] == s[e] and m3[f] and f != e}
        assert set(nb[e][ok[e]].tolist()) == want
    cfg = HamiltonianConfig(basis={"C": "1s1p"}, cutoff=3.0, num_layers=1, l_max=1, channels=2, n_radial=3,
                            radial_hidden=4, three_body=2, three_body_cutoff=1.6, three_body_max=2)
    a1, a2 = np.array([2.46, 0, 0]), np.array([1.23, 2.46 * np.sqrt(3) / 2, 0])
    graphene = Crystal(numbers=np.full(2, 6), frac=np.array([[0, 0, 0.5], [1 / 3, 1 / 3, 0.5]]),
                       lattice=np.array([a1, a2, [0, 0, 10.0]]), mask=np.ones(2, bool))
    with pytest.raises(ConfigError, match="3 neighbours within three_body_cutoff"):
        HamiltonianModel(cfg).graph(graphene)


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
                            radial_hidden=4, dtype="float64", three_body=2, three_body_cutoff=1.6, three_body_max=4)
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
        # DATA as a glob pattern is one pooled set; its per-structure errors are those of the files
        assert main(["evaluate", run, "experiments/deeph/data/graphene_01[23].npz", "--out", out]) == 0
        pooled = json.load(open(out))["data"]
        assert pooled["n_structures"] == 2
        assert main(["evaluate", run, "experiments/deeph/data/graphene_013.npz", "--out", out]) == 0
        one = json.load(open(out))["data"]
        assert one["mae_H_meV"] == pytest.approx(pooled["per_structure_mae_H_meV"][1], rel=1e-9)
        png = str(tmp_path / "b.png")
        assert main(["bands", "experiments/deeph/data/graphene_000.npz", "--path", "GMKG", "--points", "20",
                     "--dos-mesh", "6", "6", "1", "--plot", png]) == 0
        assert os.path.getsize(png) > 1000
        # fine-tuning with a band loss starts from the base run's best parameters: its first
        # validation block error is the base run's final one (before any update it would be equal;
        # after one epoch at a small LR it stays close), and the model file is the base run's
        from difcrys.train.config import load_yaml
        from difcrys.train.hamiltonian import train_hamiltonian

        cfg = load_yaml("configs/hamiltonian_graphene.yaml", "test")
        cfg["finetune"] = {"from_run": run}
        cfg["loss"] = {"H": 1.0, "S": 10.0, "bands": 0.1}
        cfg["train"] = dict(cfg["train"], epochs=1, lr=1e-7)
        ft = str(tmp_path / "ft")
        s2 = train_hamiltonian(cfg, ft, resume=False)
        assert open(os.path.join(ft, "model.json")).read() == open(os.path.join(run, "model.json")).read()
        base = json.load(open(os.path.join(run, "summary.json")))["val"]["mae_H_meV"]
        assert abs(s2["val"]["mae_H_meV"] - base) < 1e-3 * base
        assert s2["val"]["mae_band_meV"] > 0
    finally:
        os.chdir(cwd)


def _two_centre_truth(seed=3):
    """A model whose blocks are a known two-centre expansion (network weights zero)."""
    cfg = HamiltonianConfig(basis={"C": "1s1p", "Si": "1s"}, cutoff=3.6, dtype="float64", num_layers=0, l_max=1,
                            channels=2, n_radial=3, radial_hidden=4, two_centre_k=8, two_centre_rmin=0.8,
                            bond_env_k=3, bond_env_kb=3, three_body_cutoff=2.6, three_body_max=16)
    nP = len(HamiltonianModel(cfg).layout.edge_paths)
    rng = np.random.default_rng(seed)
    cH, cS = rng.normal(0, 1, (4, nP, 8)), rng.normal(0, 0.1, (4, nP, 8))
    cH[1], cS[1] = cH[2], cS[2]  # C–Si and Si–C: one physical pair function (hermitian data)
    cO = rng.normal(0, 1, (4, nP, 8))
    cE = rng.normal(0, 1, (4, nP, 2, 3, 3))  # bond crystal field (the model hermitises it)
    cfg = dataclasses.replace(cfg, two_centre_H=cH.tolist(), two_centre_S=cS.tolist(), two_centre_onsite=cO.tolist(),
                              bond_env_H=cE.tolist())
    model = HamiltonianModel(cfg)
    params = jax.tree_util.tree_map(lambda x: 0.0 * x, model.init(jax.random.PRNGKey(0)))
    return cfg, model, params


def test_fit_two_centre_recovers_a_two_centre_operator():
    """Least squares on operators generated by a known two-centre expansion (with the bond
    crystal field and the crystal-field on-site term) recovers their blocks on a different,
    rotated structure (exact up to the conditioning of the radial basis)."""
    from scipy.spatial.transform import Rotation

    from difcrys.train.hamiltonian import fit_two_centre

    cfg, model, params = _two_centre_truth()
    rng = np.random.default_rng(11)
    lat = np.diag([4.0, 4.2, 4.4])
    ops = []
    while len(ops) < 10:  # enough atoms that the on-site (crystal-field) fit is overdetermined
        frac = rng.uniform(0, 1, (8, 3))
        c = Crystal(numbers=np.array([6, 14, 6, 14, 6, 6, 14, 6]), frac=frac, lattice=lat, mask=np.ones(8, bool))
        try:
            c.validate()
        except Exception:  # noqa: BLE001  (overlapping random atoms: draw again)
            continue
        ops.append(model.predict_operator(params, c))
    fitted = dataclasses.replace(cfg, two_centre_H=None, two_centre_S=None, bond_env_H=None)
    tc = fit_two_centre(fitted, ops, ridge=1e-12, onsite_mean=np.zeros((2, 4, 4)))
    cH, cS = tc["H"], tc["S"]
    assert tc["rms_H_residual"] < 1e-5 and tc["rms_onsite_residual"] < 1e-5
    m2 = HamiltonianModel(dataclasses.replace(cfg, two_centre_H=cH, two_centre_S=cS, two_centre_onsite=tc["onsite"],
                                              bond_env_H=tc["bond_env"]))
    R = Rotation.random(random_state=4).as_matrix()
    c = Crystal(numbers=np.array([6, 14, 6, 6]), frac=np.array([[0, 0, 0], [0.3, 0.3, 0.2], [0.6, 0.1, 0.5],
                                                               [0.2, 0.7, 0.7]]), lattice=lat @ R.T,
                mask=np.ones(4, bool))
    a, b = blocks_dict(model.predict_operator(params, c)), blocks_dict(m2.predict_operator(params, c))
    scale = max(np.abs(h).max() for h, _ in a.values())
    for key, (h, s) in a.items():
        np.testing.assert_allclose(b[key][0], h, atol=1e-5 * scale)
        np.testing.assert_allclose(b[key][1], s, atol=1e-6)


def test_two_centre_overlap_of_pyscf_graphene_held_out():
    """The fitted two-centre overlap reproduces the PySCF S blocks of an unseen rattled cell."""
    import glob
    import os

    from difcrys.train.hamiltonian import block_errors, fit_statistics, load_operators

    here = os.path.join(os.path.dirname(__file__), "..", "experiments", "deeph", "data")
    train = load_operators({"files": sorted(glob.glob(os.path.join(here, "graphene_00[0-2].npz")))})
    test = load_operators({"files": [os.path.join(here, "graphene_012.npz")]})
    cfg = fit_statistics(HamiltonianConfig(basis={"C": [0, 1]}, cutoff=6.0, dtype="float64", num_layers=0,
                                           l_max=1, channels=2, n_radial=3, radial_hidden=4, two_centre_k=40),
                         train)
    model = HamiltonianModel(cfg)
    params = jax.tree_util.tree_map(lambda x: 0.0 * x, model.init(jax.random.PRNGKey(0)))
    err = block_errors(model, params, test)
    assert err["mae_S"] < 1e-5  # |S| averages 3e-2 on these edges
    # and the two-centre H baseline alone already explains most of H (MAE of |H| ~ 0.7 eV)
    assert err["mae_H_meV"] < 150.0


def _two_pyscf_cells_model():
    """Two committed PySCF graphene cells and a small float64 model with the two-centre baseline
    fitted to them (random network weights)."""
    import glob
    import os

    from difcrys.train.hamiltonian import fit_statistics, load_operators

    here = os.path.join(os.path.dirname(__file__), "..", "experiments", "deeph", "data")
    ops = load_operators({"files": sorted(glob.glob(os.path.join(here, "graphene_00[0-1].npz")))})
    cfg = fit_statistics(HamiltonianConfig(basis={"C": [0, 1]}, cutoff=4.0, dtype="float64", num_layers=0,
                                           l_max=1, channels=2, n_radial=3, radial_hidden=4, two_centre_k=12), ops)
    model = HamiltonianModel(cfg)
    params = model.init(jax.random.PRNGKey(2))
    return ops, model, params


def test_band_loss_matches_band_errors_of_the_predicted_operator():
    """The band loss's dense Bloch sums and eigen-solve (padded, batched, in the training graph)
    give the same band errors as the TBOperator path used for evaluation."""
    from difcrys.train.hamiltonian import HamiltonianTask, HLossConfig, band_errors
    from difcrys.train.loop import TrainConfig

    ops, model, params = _two_pyscf_cells_model()
    task = HamiltonianTask(model, ops[:1], ops[1:], HLossConfig(bands=1.0, band_window_ev=2.0),
                           TrainConfig(batch_size=1))
    b = next(task.val_batches())
    sq, ab, n, sqg, abg = task._band_sq(task._predict(params, b), b)
    ref = band_errors(model.predict_operator(params, ops[1].crystal), ops[1], window_ev=2.0)
    assert int(n) == ref["model_mesh_n"] > 10
    np.testing.assert_allclose(1000.0 * float(ab) / float(n), ref["model_mesh_mae_meV"], rtol=1e-8)
    np.testing.assert_allclose(1000.0 * float(abg) / float(n), ref["model_mesh_shift_mae_meV"], rtol=1e-8)
    # and its gradient is finite and not zero
    g = jax.grad(lambda p: task.loss(p, b, task.loss_weights(0))[0])(params)
    norms = [float(np.abs(x).max()) for x in jax.tree_util.tree_leaves(g)]
    assert all(np.isfinite(norms)) and max(norms) > 0


def test_gauge_loss_and_fermi_aligned_bands_ignore_a_constant_potential_offset():
    """A constant potential offset c adds c·S(R) to every block and c to every band energy. The
    gauge block loss, the gauge band loss and the Fermi-aligned band errors do not change when the
    reference is offset that way, while the raw ones do; the fitted offset is c itself."""
    from difcrys.tb.operators import TBOperator
    from difcrys.train.hamiltonian import HamiltonianTask, HLossConfig, band_errors, block_errors, pool_band_errors
    from difcrys.train.loop import TrainConfig

    ops, model, params = _two_pyscf_cells_model()
    ref = ops[1]
    c = 0.037  # eV
    meta = dict(ref.meta)
    for k in ("eig_mesh", "eig_extra", "mu_ev"):
        if k in meta:
            meta[k] = np.asarray(meta[k]) + c
    moved = TBOperator(crystal=ref.crystal, basis=ref.basis, pairs=ref.pairs, shifts=ref.shifts,
                       H=ref.H + c * ref.S, S=ref.S, meta=meta)
    def loss(op, gauge):
        task = HamiltonianTask(model, ops[:1], [op], HLossConfig(S=0.0, bands=0.5, onsite=3.0, gauge=gauge),
                               TrainConfig(batch_size=1))
        return float(task.loss(params, next(task.val_batches()), task.loss_weights(0))[0])

    out = {name: (loss(op, True), block_errors(model, params, [op]),
                  band_errors(model.predict_operator(params, op.crystal), op, 2.0))
           for name, op in (("ref", ref), ("moved", moved))}
    raw = {name: loss(op, False) for name, op in (("ref", ref), ("moved", moved))}
    np.testing.assert_allclose(out["moved"][0], out["ref"][0], rtol=1e-7)
    assert abs(raw["moved"] - raw["ref"]) > 1e-3 * raw["ref"]
    for k in ("mae_H_gauge_meV",):
        np.testing.assert_allclose(out["moved"][1][k], out["ref"][1][k], rtol=1e-7)
    np.testing.assert_allclose(out["ref"][1]["per_structure_offset_meV"][0] - out["moved"][1]["per_structure_offset_meV"][0],
                               1000.0 * c, rtol=1e-7)
    for k in ("model_mesh_ef_mae_meV", "model_off_mesh_ef_mae_meV", "model_mesh_shift_mae_meV"):
        np.testing.assert_allclose(out["moved"][2][k], out["ref"][2][k], rtol=1e-6, atol=1e-6)
    # the DFT operator itself, offset or not, has the same Fermi-aligned error (the < 1 meV of its
    # stored blocks against the DFT eigenvalues), while its raw error grows by about c
    exact, moved_exact = band_errors(ref, ref, 2.0), band_errors(moved, ref, 2.0)
    assert exact["model_mesh_ef_mae_meV"] < 1.0
    np.testing.assert_allclose(moved_exact["model_mesh_ef_mae_meV"], exact["model_mesh_ef_mae_meV"], rtol=1e-6)
    assert moved_exact["model_mesh_mae_meV"] > 1000.0 * c - 1.0
    # pooling over structures weights each structure's MAE by its number of eigenvalues
    a, b = out["ref"][2], moved_exact
    pooled = pool_band_errors([a, b, {"error": "S not positive definite"}])
    n = a["model_mesh_n"] + b["model_mesh_n"]
    assert pooled["n_failed"] == 1 and pooled["model_mesh_n"] == n
    np.testing.assert_allclose(pooled["model_mesh_ef_mae_meV"], (a["model_mesh_ef_mae_meV"] * a["model_mesh_n"] + b[
        "model_mesh_ef_mae_meV"] * b["model_mesh_n"]) / n, rtol=1e-12)


def test_onsite_loss_weight_and_selection_metric():
    """``loss.onsite`` re-weights exactly the on-site entries of the block loss (checked against
    the on-site squared error of the predicted operator), ``select_by`` picks the metric, and bad
    settings are rejected."""
    from difcrys.errors import ConfigError
    from difcrys.train.hamiltonian import HamiltonianTask, HLossConfig
    from difcrys.train.loop import TrainConfig

    ops, model, params = _two_pyscf_cells_model()
    losses = {}
    for w in (1.0, 5.0):
        task = HamiltonianTask(model, ops[:1], ops[1:], HLossConfig(S=0.0, onsite=w), TrainConfig(batch_size=1))
        b = next(task.val_batches())
        losses[w] = float(task.loss(params, b, task.loss_weights(0))[0])
        count = float(task._errors(task._predict(params, b), b)["count"])
    pred = model.predict_operator(params, ops[1].crystal)
    on = np.array([q for q, ((i, j), R) in enumerate(zip(ops[1].pairs, ops[1].shifts)) if i == j and not np.any(R)])
    sse_on = float(np.sum((pred.H[: len(on)] - ops[1].H[on]) ** 2))  # predicted on-site blocks come first
    np.testing.assert_allclose(losses[5.0] - losses[1.0], 4.0 * sse_on / count, rtol=1e-8)
    bands = HamiltonianTask(model, ops[:1], ops[1:], HLossConfig(bands=0.1), TrainConfig(batch_size=1))
    blocks = HamiltonianTask(model, ops[:1], ops[1:], HLossConfig(bands=0.1, select_by="blocks"),
                             TrainConfig(batch_size=1))
    assert (bands.val_metric, blocks.val_metric) == ("mae_band_meV", "mae_H_meV")
    gauge = HamiltonianTask(model, ops[:1], ops[1:], HLossConfig(bands=0.1, gauge=True), TrainConfig(batch_size=1))
    assert gauge.val_metric == "mae_band_gauge_meV"
    for bad in (dict(onsite=-1.0), dict(select_by="loss")):
        with pytest.raises(ConfigError):
            HamiltonianTask(model, ops[:1], ops[1:], HLossConfig(**bad), TrainConfig(batch_size=1))
