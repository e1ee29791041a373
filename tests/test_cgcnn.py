"""CGCNN (difcrys.nn.cgcnn): graph construction, invariances, gradients, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import central_fd

from difcrys.crystal import Crystal, supercell
from difcrys.errors import ConfigError, ElementError, StructureError
from difcrys.nn.cgcnn import (
    MAX_Z,
    CGCNN,
    CGCNNConfig,
    element_feature_table,
    featurize,
    gaussian_expansion,
    property_graph,
)


def perovskite(a=3.905):
    """Cubic SrTiO3 (Pm-3m): maximally degenerate neighbour shells."""
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return Crystal.create(["Sr", "Ti", "O", "O", "O"], frac, np.eye(3) * a)


def distorted(seed=0):
    """A low-symmetry 5-atom cell with mixed anions (no distance ties)."""
    rng = np.random.default_rng(seed)
    c = perovskite()
    frac = np.asarray(c.frac) + 0.04 * rng.standard_normal((5, 3))
    lat = np.eye(3) * 3.9 + 0.15 * rng.standard_normal((3, 3))
    return Crystal.create([38, 22, 8, 7, 9], frac, lat)


def rotation(seed=1):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    return q * np.sign(np.linalg.det(q))


def trained_like_variables(model, seed=0):
    """Random parameters with non-trivial batch-norm running statistics (as after training)."""
    v = model.init(jax.random.PRNGKey(seed))
    keys = iter(jax.random.split(jax.random.PRNGKey(seed + 1), 64))
    st = jax.tree_util.tree_map(lambda x: x + 0.3 * jax.random.uniform(next(keys), x.shape, x.dtype), v["state"])
    return {"params": v["params"], "state": st}


def predict(model, variables, crystals, **kw):
    gd = featurize(crystals, **kw)
    c, g = gd.take(np.arange(len(gd)))
    return np.asarray(jax.jit(lambda v, c, g: model.apply(v, c, g)[0])(variables, c, g))


@pytest.fixture(scope="module")
def model64():
    m = CGCNN(CGCNNConfig(dtype="float64", atom_fea_len=16, h_fea_len=16, n_conv=2))
    return m, trained_like_variables(m)


# ------------------------------------------------------------------------ features and graph
def test_element_table_encodes_periodic_table():
    T = element_feature_table()
    assert T.shape[0] == MAX_Z + 1 and np.all(T[0] == 0)
    # block one-hot: offset 18 (group) + 7 (period) + 4 x 10 (X, radius, IE, EA) = 65
    blocks = {1: "s", 6: "p", 26: "d", 64: "f", 92: "f", 11: "s", 35: "p"}
    for z, b in blocks.items():
        assert T[z, 65 + "spdf".index(b)] == 1 and T[z, 65:69].sum() == 1
    # group and period of O (16, 2) and Fe (8, 4)
    assert T[8, 15] == 1 and T[8, 18 + 1] == 1
    assert T[26, 7] == 1 and T[26, 18 + 3] == 1
    # electronegativity increases along period 2: the bin index of F is above that of Li
    xb = lambda z: int(np.argmax(T[z, 25:35]))
    assert xb(9) > xb(8) > xb(6) > xb(3)


def test_gaussian_expansion_reference():
    d = jnp.array([0.0, 1.3])
    e = gaussian_expansion(d)
    assert e.shape == (2, 41)
    np.testing.assert_allclose(e[1, 6], np.exp(-((1.3 - 1.2) ** 2) / 0.04), rtol=1e-12)
    np.testing.assert_allclose(e[0, 0], 1.0)


def _neighbour_shells(crystal, i, j, s):
    frac, lat, z = np.asarray(crystal.frac), np.asarray(crystal.lattice), np.asarray(crystal.numbers)
    r = np.linalg.norm((frac[j] + s - frac[i]) @ lat, axis=-1)
    per_atom = {}
    for a, zb, d in zip(i, z[j], r):
        per_atom.setdefault(a, []).append((int(zb), round(float(d), 6)))
    return {a: sorted(v) for a, v in per_atom.items()}


def test_knn_shell_graph_matches_ase_and_is_supercell_consistent():
    from ase.neighborlist import neighbor_list

    from difcrys.io import to_ase

    c = perovskite()
    i, j, s = property_graph(c)
    sh = _neighbour_shells(c, i, j, s)
    # Sr: 12 O at a/sqrt2 (exactly 12); Ti: 6 O at a/2, then 8 Sr at a*sqrt3/2 -> shell completion
    # keeps all 8 (14 neighbours), while strict 12-NN would keep 6 arbitrary Sr.
    assert len(sh[0]) == 12 and all(d == pytest.approx(3.905 / np.sqrt(2)) for _, d in sh[0])
    assert len(sh[1]) == 14
    ki, kj, _ = property_graph(c, mode="knn")  # strict 12-NN: only 6 of the 8 equidistant Sr
    assert np.sum(ki == 1) == 12 and np.sum(np.asarray(c.numbers)[kj[ki == 1]] == 38) == 6
    # reference: ASE neighbour list within the shell radius of Ti
    ai, aj, ad = neighbor_list("ijd", to_ase(c), 3.905 * np.sqrt(3) / 2 + 1e-3)
    assert np.sum(ai == 1) == 14
    # supercell: every atom sees the same (species, distance) multiset as its primitive image
    for P in (np.diag([2, 1, 1]), np.array([[1, 1, 0], [-1, 1, 0], [0, 0, 1]])):  # both 10 atoms
        sc = supercell(c, P)
        si, sj, ss = property_graph(sc)
        ssh = _neighbour_shells(sc, si, sj, ss)
        zsc = np.asarray(sc.numbers)
        for a in range(sc.frac.shape[0]):
            prim = [k for k in range(5) if int(np.asarray(c.numbers)[k]) == zsc[a]]
            assert any(ssh[a] == sh[k] for k in prim)


def test_strict_knn_matches_distance_sorted_ase():
    from ase.neighborlist import neighbor_list

    from difcrys.io import to_ase

    c = distorted()
    i, j, s = property_graph(c, mode="knn")
    frac, lat = np.asarray(c.frac), np.asarray(c.lattice)
    d = np.linalg.norm((frac[j] + s - frac[i]) @ lat, axis=-1)
    ai, ad = neighbor_list("id", to_ase(c), 9.0)
    for a in range(5):
        np.testing.assert_allclose(np.sort(d[i == a]), np.sort(ad[ai == a])[:12], atol=1e-9)
    # without ties, the shell-complete graph is the 12-NN graph
    i2, _, _ = property_graph(c)
    assert len(i2) == len(i) == 60


def test_numpy_shell_graph_equals_jax_neighbour_search():
    """The host (NumPy) knn_shell search gives the same edge set as the vmapped JAX search
    (difcrys.graph.knn_graph + neighbor_graph), including degenerate shells and a skewed supercell."""
    from difcrys.nn.cgcnn import _batch_edges

    cub = perovskite()
    cl = [cub, supercell(cub, np.array([[1, 1, 0], [-1, 1, 0], [0, 0, 1]])), distorted(4),
          supercell(distorted(2), np.diag([1, 2, 1]))]
    a = _batch_edges(cl, 12, "knn_shell", 1e-3, backend="numpy")
    b = _batch_edges(cl, 12, "knn_shell", 1e-3, backend="jax")
    for (i, j, s), (i2, j2, s2) in zip(a, b):
        assert sorted(map(tuple, np.c_[i, j, s].tolist())) == sorted(map(tuple, np.c_[i2, j2, s2].tolist()))
    # cubic SrTiO3: Sr 12 O; Ti 6 O + 8 Sr; O 2 Ti + (4 Sr + 8 O) at a/sqrt2: 12, 14, 14 (shells completed)
    assert [len(e[0]) for e in a][:2] == [12 + 14 + 3 * 14, 2 * (12 + 14 + 3 * 14)]


# ------------------------------------------------------------------------------ invariances
@pytest.fixture(scope="module")
def transformed_predictions(model64):
    """Predictions for a structure and its transformed copies, featurised and evaluated as one
    padded batch (one compilation; the batch also mixes 5- and 20-atom cells, so padding
    invariance is tested at the same time)."""
    m, v = model64
    c = distorted()
    R = rotation()
    perm = np.array([3, 0, 4, 1, 2])
    P1, P2 = np.diag([2, 1, 1]), np.array([[1, 1, 0], [-1, 1, 0], [0, 0, 2]])
    cub = perovskite()
    items = {
        "ref": c,
        "rot": Crystal.create(c.numbers, c.frac, np.asarray(c.lattice) @ R.T),
        "trans": Crystal.create(c.numbers, np.asarray(c.frac) + np.array([0.31, -0.42, 0.77]), c.lattice),
        "perm": Crystal.create(np.asarray(c.numbers)[perm], np.asarray(c.frac)[perm], c.lattice),
        "sc1": supercell(c, P1), "sc2": supercell(c, P2),
        "cubic": cub, "cubic_sc1": supercell(cub, P1), "cubic_sc2": supercell(cub, P2),
        "other": distorted(5),
    }
    y = predict(m, v, list(items.values()))
    return dict(zip(items, y))


def test_invariance_rotation_translation_permutation(transformed_predictions):
    y = transformed_predictions
    for k in ("rot", "trans", "perm"):
        assert y[k] == pytest.approx(y["ref"], rel=1e-10, abs=1e-10), k
    # the prediction does depend on the structure (not a constant)
    assert abs(y["other"] - y["ref"]) > 1e-4


def test_invariance_primitive_vs_supercell(transformed_predictions):
    y = transformed_predictions
    for k in ("sc1", "sc2"):
        assert y[k] == pytest.approx(y["ref"], rel=1e-10, abs=1e-10), k
    # cubic SrTiO3: degenerate shells (the 12th and 13th neighbours of Ti are equidistant)
    for k in ("cubic_sc1", "cubic_sc2"):
        assert y[k] == pytest.approx(y["cubic"], rel=1e-10, abs=1e-10), k


@pytest.mark.slow
def test_batch_independence_in_eval(model64, transformed_predictions):
    m, v = model64
    ya = predict(m, v, [distorted()])[0]  # alone, unpadded
    assert ya == pytest.approx(transformed_predictions["ref"], rel=1e-12)


# ------------------------------------------------------------------------------- gradients
def test_gradients_positions_lattice_and_soft_types_match_fd(model64):
    m, v = model64
    c = distorted(3)
    gd = featurize([c])
    cb, gb = gd.take(np.array([0]))

    @jax.jit
    def y_of(frac, lattice, probs=None):
        cc = cb.replace(frac=jnp.asarray(frac)[None], lattice=jnp.asarray(lattice)[None])
        return m.apply(v, cc, gb, type_probs=None if probs is None else jnp.asarray(probs)[None])[0][0]

    frac0, lat0 = np.asarray(cb.frac[0]), np.asarray(cb.lattice[0])
    gf, gl = jax.grad(y_of, argnums=(0, 1))(frac0, lat0)
    np.testing.assert_allclose(gf, central_fd(lambda x: float(y_of(x, lat0)), frac0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gl, central_fd(lambda x: float(y_of(frac0, x)), lat0), rtol=1e-6, atol=1e-8)
    assert np.abs(gf).max() > 1e-6 and np.abs(gl).max() > 1e-6
    # soft types: one-hot probabilities reproduce the hard prediction; gradient w.r.t. them
    onehot = np.zeros((5, MAX_Z))
    onehot[np.arange(5), np.asarray(c.numbers) - 1] = 1.0
    np.testing.assert_allclose(y_of(frac0, lat0, onehot), y_of(frac0, lat0), rtol=1e-12)
    probs = 0.8 * onehot + 0.2 / MAX_Z
    gp = jax.grad(lambda p: y_of(frac0, lat0, p))(probs)
    cols = [7, 8, 21, 37, 56]  # O, F, Ti, Sr, Ba columns (Z - 1)
    sub = central_fd(lambda x: float(y_of(frac0, lat0, np.concatenate([probs[:, :7], x, probs[:, 9:]], 1))),
              probs[:, 7:9])
    np.testing.assert_allclose(np.asarray(gp)[:, 7:9], sub, rtol=1e-6, atol=1e-9)
    assert np.abs(np.asarray(gp)[:, cols]).max() > 1e-6


@pytest.mark.slow
def test_float32_default_and_train_mode_updates_running_stats():
    m = CGCNN()
    v = m.init(jax.random.PRNGKey(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(v))
    gd = featurize([distorted(1)])
    c, g = gd.take(np.arange(1))
    y, st = m.apply(v, c, g, train=True)
    assert y.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(y)))
    # BN running mean moved towards the batch mean (momentum 0.1)
    assert not np.allclose(np.asarray(st["conv"][0]["bn2"]["mean"]), 0.0)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_errors(model64):
    c = Crystal.create([101, 8], np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), np.eye(3) * 4.0)  # Md
    with pytest.raises(ElementError, match="101"):
        featurize([c])
    with pytest.raises(StructureError, match="empty"):
        featurize([])
    with pytest.raises(ConfigError):
        CGCNNConfig(n_conv=0)
    with pytest.raises(ConfigError):
        CGCNNConfig(dtype="float16")
    with pytest.raises(ConfigError):
        property_graph(perovskite(), mode="radius")
    m, v = model64
    gd = featurize([perovskite()])
    cb, gb = gd.take(np.array([0]))
    with pytest.raises(ConfigError, match="type_probs"):
        m.apply(v, cb, gb, type_probs=jnp.ones((1, 5, 90)))
