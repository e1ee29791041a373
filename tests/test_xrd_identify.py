"""Pattern identification: simulated training data, the confidence-weighted ensemble, checkpoints."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difcrys.crystal import Crystal
from difcrys.errors import ConfigError, FileFormatError
from difcrys.xrd import identify as idf
from difcrys.xrd import radiation
from difcrys.xrd.pattern import Profile, powder_pattern


def _fcc(a, el="Cu"):
    return Crystal.create([el] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], np.eye(3) * a)


def _bcc(a, el="Fe"):
    return Crystal.create([el] * 2, [[0, 0, 0], [0.5, 0.5, 0.5]], np.eye(3) * a)


def test_unperturbed_simulation_is_the_powder_pattern():
    grid = idf.Grid(lo=20, hi=100, n=256, pool=2)
    prep = idf.prepare_crystals([_fcc(3.6), _bcc(2.87)], grid, strain=0.0)
    X, y = idf.simulate_dataset(prep, np.array([0, 1]), 1, grid, idf.NO_AUGMENT, batch=2)
    (l1, l2), (w1, w2) = radiation.kalpha_doublet("Cu")
    f = jax.jit(lambda c, r: powder_pattern(c, r, jnp.asarray(grid.points), (l1, l2), (w1, w2),
                                            profile=Profile(W=0.01, eta0=0.5), B=0.5))
    for k, (c, r) in enumerate(prep):
        ref = f(c, r)
        ref = np.asarray(ref).reshape(-1, 2).mean(-1)
        ref = (ref - ref.min()) / (ref.max() - ref.min())
        np.testing.assert_allclose(X[y == k][0], ref, atol=2e-5)


def test_ensemble_probabilities_follow_the_confidence_rule():
    groups = idf.make_groups(5, 2)  # [[0, 1, 2], [3, 4, -1]]
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    params = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[idf.init_submodel(k, 3, (8, 8)) for k in keys])
    x = jax.random.uniform(jax.random.PRNGKey(1), (4, 64))
    both = jax.jit(lambda p, x: (idf.ensemble_log_proba(p, groups, x),
                                 jax.vmap(idf.apply_submodel, in_axes=(0, None))(p, x)))
    lp, (logits, conf) = both(params, x)
    lp = np.asarray(lp)
    np.testing.assert_allclose(np.exp(lp).sum(-1), 1.0, rtol=1e-5)
    p0 = jax.nn.sigmoid(conf[0])[:, None] * jax.nn.softmax(logits[0], -1)
    p1 = jax.nn.sigmoid(conf[1])[:, None] * jax.nn.softmax(logits[1][:, :2], -1)
    manual = np.concatenate([p0, p1], -1)
    manual /= manual.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.exp(lp), manual, rtol=1e-5)


@pytest.mark.slow
def test_training_separates_fcc_from_bcc_and_checkpoint_roundtrip(tmp_path):
    grid = idf.Grid(lo=20, hi=100, n=256, pool=2)
    cs = [_fcc(a) for a in (3.5, 3.6, 3.9, 4.05)] + [_bcc(a) for a in (2.87, 3.0, 3.3, 3.15)]
    labels = np.array([0] * 4 + [1] * 4)
    prep = idf.prepare_crystals(cs, grid)
    aug = dataclasses.replace(idf.Augment(), impurity_prob=0.2)
    X, y = idf.simulate_dataset(prep, labels, 6, grid, aug, seed=1, batch=8)
    Xt, yt = idf.simulate_dataset(prep, labels, 2, grid, aug, seed=2, batch=8)
    clf = idf.train_classifier(X, y, Xt, yt, ["fcc", "bcc"], grid, n_submodels=2, epochs=25, batch=16,
                               widths=(8, 16), log=lambda *_: None)
    acc = idf.topk_accuracy(idf.predict_scores(clf, Xt), yt, ks=(1,))["top1"]
    assert acc >= 0.9
    idf.save_model(clf, tmp_path)
    back = idf.load_model(tmp_path)
    np.testing.assert_allclose(idf.predict_scores(back, Xt), idf.predict_scores(clf, Xt), rtol=1e-5, atol=1e-5)
    out = idf.identify(back, grid.points, np.asarray(Xt[0]).repeat(2), top=2)
    assert [c["label"] for c in out["candidates"]][0] == ["fcc", "bcc"][yt[0]]


def test_checkpoint_roundtrip(tmp_path):
    grid = idf.Grid(lo=20, hi=100, n=128, pool=2)
    groups = idf.make_groups(3, 2)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    params = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[idf.init_submodel(k, 2, (8, 8)) for k in keys])
    means = np.random.default_rng(0).uniform(size=(3, grid.n_bins)).astype(np.float32)
    clf = idf.Classifier(params=params, groups=groups, class_names=["a", "b", "c"], class_means=means, beta=2.0,
                         grid=grid)
    X = np.random.default_rng(1).uniform(size=(5, grid.n_bins)).astype(np.float32)
    idf.save_model(clf, tmp_path)
    back = idf.load_model(tmp_path)
    assert back.beta == 2.0 and back.class_names == ["a", "b", "c"] and back.grid == grid
    np.testing.assert_allclose(idf.predict_scores(back, X), idf.predict_scores(clf, X), rtol=1e-6, atol=1e-6)


def test_identify_bad_input(tmp_path):
    with pytest.raises(FileFormatError, match="no trained classifier"):
        idf.load_model(tmp_path / "none")
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(FileFormatError, match="not a difcrys classifier"):
        idf.load_model(tmp_path)
    with pytest.raises(ConfigError, match="overlap"):
        idf.pattern_to_input(np.linspace(100, 120, 10), np.ones(10), idf.Grid())


@pytest.mark.slow
def test_shipped_checkpoint_recognises_training_structures():
    if not (idf.SHIPPED_MODEL / "model.json").exists():
        pytest.skip("no shipped classifier checkpoint")
    from conftest import require_data

    clf = idf.load_model()
    csv = require_data("mp_20_xrd_subset", "test_subset.csv")
    import warnings

    import pandas as pd
    from pymatgen.core import Structure

    from difcrys.xrd.api import crystal_from_pymatgen

    df = pd.read_csv(csv)
    sel = df[df["spacegroup.number"] == 225].iloc[:6]  # rock salt / Heusler / fluorite-like cubic crystals
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cs = [crystal_from_pymatgen(Structure.from_str(c, fmt="cif"))[0] for c in sel.cif]
    prep = idf.prepare_crystals(cs, clf.grid)
    label = clf.class_names.index("225")
    X, y = idf.simulate_dataset(prep, np.full(len(cs), label), 1, clf.grid, idf.Augment(), seed=7, batch=8)
    acc = idf.topk_accuracy(idf.predict_scores(clf, X), y)
    assert acc["top5"] >= 0.8
