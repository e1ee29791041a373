"""Property training (difcrys.train.property), baselines, the equivariant head and `difcrys predict`."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import central_fd

from difcrys.crystal import Crystal, supercell
from difcrys.data import Dataset
from difcrys.errors import ConfigError, ElementError, StructureError
from difcrys.nn.cgcnn import MAX_Z, featurize
from difcrys.nn.property_head import EquivariantConfig, EquivariantPropertyNet
from difcrys.train.property import (
    PropertyConfig,
    composition_features,
    composition_ridge,
    load_predictor,
    mean_baseline,
    train_property,
)


def rocksalt(a, z=(11, 17)):
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5]])
    lat = a * np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    return Crystal.create(list(z), frac, lat)


def distorted(seed=0):
    rng = np.random.default_rng(seed)
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    frac = frac + 0.04 * rng.standard_normal((5, 3))
    return Crystal.create([38, 22, 8, 7, 9], frac, np.eye(3) * 3.9 + 0.15 * rng.standard_normal((3, 3)))


# ----------------------------------------------------------------------------------- baselines
def test_composition_features_match_pymatgen():
    from pymatgen.core import Composition

    c = distorted()
    f = composition_features([c])[0]
    comp = Composition("SrTiONF")
    for el in comp:
        assert f[el.Z - 1] == pytest.approx(comp.get_atomic_fraction(el))
    assert f.sum() == pytest.approx(1.0)


def test_ridge_recovers_a_composition_function_and_mean_baseline():
    rng = np.random.default_rng(0)
    zs = [3, 11, 19, 9, 17, 35]
    cs = [rocksalt(4.0 + rng.random(), (int(rng.choice(zs[:3])), int(rng.choice(zs[3:])))) for _ in range(60)]
    eff = {3: -1.0, 11: 0.5, 19: 2.0, 9: -0.7, 17: 0.3, 35: 1.1}
    y = np.array([0.5 * sum(eff[int(z)] for z in np.asarray(c.numbers)) for c in cs])
    r = composition_ridge(cs[:40], y[:40], cs[40:50], y[40:50], cs[50:], y[50:])
    assert r["test_mae"] < 1e-3
    assert mean_baseline(y[:40], y[50:]) == pytest.approx(np.mean(np.abs(y[50:] - y[:40].mean())))


def test_baseline_bad_input():
    with pytest.raises(StructureError, match="empty"):
        composition_features([])
    with pytest.raises(ElementError):
        composition_features([rocksalt(4.0, (101, 9))])


# ---------------------------------------------------------------------------- equivariant head
def rotation(seed=1):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    return q * np.sign(np.linalg.det(q))


@pytest.fixture(scope="module")
def equivariant_setup():
    m = EquivariantPropertyNet(EquivariantConfig(n_scalars=8, n_vectors=4, n_layers=2, radial_hidden=8,
                                                 readout_hidden=8, dtype="float64"))
    c = distorted(2)
    R = rotation()
    perm = np.array([2, 4, 0, 1, 3])
    items = [c, Crystal.create(c.numbers, c.frac, np.asarray(c.lattice) @ R.T),
             Crystal.create(c.numbers, np.asarray(c.frac) + 0.37, c.lattice),
             Crystal.create(np.asarray(c.numbers)[perm], np.asarray(c.frac)[perm], c.lattice),
             supercell(c, np.array([[1, 1, 0], [-1, 1, 0], [0, 0, 1]])), distorted(7)]
    gd = featurize(items)
    cb, gb = gd.take(np.arange(len(items)))
    v = m.init(jax.random.PRNGKey(0), cb, gb)
    return m, v, cb, gb


def test_equivariant_head_invariances(equivariant_setup):
    m, v, cb, gb = equivariant_setup
    assert all(x.dtype == jnp.float64 for x in jax.tree_util.tree_leaves(v["params"]))
    y = np.asarray(jax.jit(lambda v: m.apply(v, cb, gb)[0])(v))
    # rotation, translation, permutation, supercell (10 atoms, padded in the same batch)
    np.testing.assert_allclose(y[1:5], y[0], rtol=1e-9, atol=1e-10)
    assert abs(y[5] - y[0]) > 1e-5


@pytest.mark.slow
def test_equivariant_head_gradients_match_fd(equivariant_setup):
    """d prediction / d (frac, lattice, soft type probabilities) against central differences."""
    m, v, cb, gb = equivariant_setup
    frac0, lat0 = np.asarray(cb.frac), np.asarray(cb.lattice)
    numbers = np.asarray(cb.numbers)
    onehot = np.zeros(numbers.shape + (MAX_Z,))
    for b, a in zip(*np.nonzero(numbers)):
        onehot[b, a, numbers[b, a] - 1] = 1.0

    @jax.jit
    def f(f0, l0, p0):
        c = cb.replace(frac=jnp.asarray(frac0).at[0].set(f0), lattice=jnp.asarray(lat0).at[0].set(l0))
        return m.apply(v, c, gb, type_probs=jnp.asarray(onehot).at[0].set(p0))[0][0]

    p0 = 0.8 * onehot[0] + 0.2 / MAX_Z
    args = (jnp.asarray(frac0[0]), jnp.asarray(lat0[0]), jnp.asarray(p0))
    # one-hot soft types reproduce the hard-type prediction
    hard = np.asarray(jax.jit(lambda: m.apply(v, cb, gb)[0])())[0]
    assert float(f(args[0], args[1], jnp.asarray(onehot[0]))) == pytest.approx(hard, rel=1e-10)
    gf, gl, gp = (np.asarray(x) for x in jax.jit(jax.grad(f, argnums=(0, 1, 2)))(*args))
    n = int((numbers[0] > 0).sum())
    fd_f = central_fd(lambda x: float(f(x, args[1], args[2])), frac0[0])
    fd_l = central_fd(lambda x: float(f(args[0], x, args[2])), lat0[0])
    cols = [7, 8]  # O, F probability columns (Z - 1)
    fd_p = central_fd(lambda x: float(f(args[0], args[1], jnp.asarray(p0).at[:, 7:9].set(x))), p0[:, 7:9])
    np.testing.assert_allclose(gf[:n], fd_f[:n], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(gl, fd_l, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(gp[:, cols], fd_p, rtol=1e-5, atol=1e-8)
    assert min(np.abs(gf[:n]).max(), np.abs(gl).max(), np.abs(gp[:, cols]).max()) > 1e-6


# ------------------------------------------------------------------------------ training + CLI
def _toy_sets():
    """Rocksalt cells whose target (volume per atom, Å^3) depends on structure, not composition."""
    rng = np.random.default_rng(1)

    def make(n, off):
        a = 3.6 + 1.6 * rng.random(n)
        cs = [rocksalt(x) for x in a]
        y = a**3 / 8.0  # fcc primitive cell volume a^3/4, two atoms
        return Dataset(crystals=cs, properties={"vpa": y}, units={"vpa": "Å^3/atom"}, ids=[f"s{off + k}" for k in range(n)])

    return make(64, 0), make(16, 100), make(16, 200)


@pytest.mark.slow
def test_train_resume_predict_and_cli(tmp_path, capsys):
    tr, va, te = _toy_sets()
    cfg = PropertyConfig(model="cgcnn", target="vpa", epochs=15, batch_size=16, lr=5e-3, loss="l1",
                         model_kwargs={"atom_fea_len": 16, "h_fea_len": 16, "n_conv": 1})
    run = tmp_path / "run"
    res = train_property(cfg, tr, va, run, te, log=None)
    # structure beats the training-set mean (composition is constant here, so it cannot help)
    base = mean_baseline(tr.properties["vpa"], te.properties["vpa"])
    assert res["test_mae"] < 0.5 * base, (res, base)
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(1, 16))
    assert (run / "parity_test.png").exists()
    # resume: continues from epoch 15 to 17, keeping the history
    cfg2 = PropertyConfig(**{**cfg.__dict__, "epochs": 17})
    train_property(cfg2, tr, va, run, te, log=None)
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(1, 18))
    # a different config in the same folder is refused
    with pytest.raises(ConfigError, match="different config"):
        train_property(PropertyConfig(**{**cfg.__dict__, "lr": 1e-2}), tr, va, run, te, log=None)
    # predictor reproduces the stored test predictions, in target units
    pred = load_predictor(run)
    stored = np.loadtxt(run / "predictions_test.csv", delimiter=",", skiprows=1, usecols=2)
    np.testing.assert_allclose(pred(te.crystals), stored, rtol=1e-5)
    # CLI: difcrys predict RUN_DIR STRUCTURE (a CIF file)
    import argparse

    from difcrys import io
    from difcrys.cli_property import register

    path = tmp_path / "nacl.cif"
    io.write(path, te.crystals[0])
    ap = argparse.ArgumentParser()
    register(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["predict", str(run), str(path), "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["vpa"] == pytest.approx(stored[0], rel=1e-4)
    # bad input
    with pytest.raises(StructureError, match="empty"):
        pred([])
    with pytest.raises(ElementError):
        pred([rocksalt(4.0, (101, 9))])
    with pytest.raises(ConfigError, match="not a property run"):
        load_predictor(tmp_path)


def test_config_errors():
    tr, va, te = _toy_sets()
    with pytest.raises(ConfigError):
        PropertyConfig(model="schnet")
    with pytest.raises(ConfigError):
        PropertyConfig(loss="huber")
    with pytest.raises(ConfigError, match="target"):
        train_property(PropertyConfig(target="band_gap"), tr, va, "/nonexistent/never_written", log=None)


def test_size_buckets_trim_padding_without_changing_predictions():
    """Batches cut to their bucket's own size give the same predictions as fully padded batches."""
    from difcrys.nn.cgcnn import CGCNN, CGCNNConfig
    from difcrys.train.property import _bucket_plan, _take_trimmed

    cs = [rocksalt(4.0 + 0.1 * k) for k in range(6)] + [distorted(k) for k in range(6)]
    gd = featurize(cs)
    plan = _bucket_plan(gd, 2, 4)
    assert sorted(np.concatenate([p[0] for p in plan]).tolist()) == list(range(12))
    assert [p[1] for p in plan] == [2, 5] and plan[0][2] < plan[1][2] == int(np.max(gd.graph.n_edges))
    m = CGCNN(CGCNNConfig(atom_fea_len=8, h_fea_len=8, n_conv=2, dtype="float64"))
    v = m.init(jax.random.PRNGKey(0))
    idx, n, e = plan[0]
    full = np.asarray(m.apply(v, *gd.take(idx))[0])
    trimmed = np.asarray(m.apply(v, *_take_trimmed(gd, idx, n, e))[0])
    np.testing.assert_allclose(trimmed, full, rtol=1e-12)
    with pytest.raises(ConfigError, match="n_buckets"):
        PropertyConfig(n_buckets=0)
