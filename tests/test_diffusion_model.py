"""Diffusion model: loss targets, sampler correctness with an exact (oracle) score, guidance, input errors."""

import math

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from difcrys.crystal import Crystal
from difcrys.diffusion import guidance as gd
from difcrys.diffusion import lattice as lat
from difcrys.diffusion import model as dm
from difcrys.diffusion import wrapped_normal as wn
from difcrys.errors import ConfigError, ElementError


def _perovskite(a=3.9):
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return Crystal.create(["Sr", "Ti", "O", "O", "O"], frac, np.eye(3) * a)


class _Oracle:
    """The exact denoiser of a point-mass data distribution at (x0, L0): what a perfect network outputs."""

    def __init__(self, spec, x0, L0):
        self.spec, self.x0, self.L0 = spec, jnp.asarray(x0), jnp.asarray(L0)
        self.tab = dm._tables(spec, jnp.float64)

    def apply(self, params, types, frac, L, mask, t, scale, **kw):
        ti = jnp.round(t * self.spec.T).astype(int)
        sig = self.tab["sigma"][ti][:, None, None]
        x0 = jnp.broadcast_to(self.x0, frac.shape)
        coord = wn.score(frac, x0, sig, 6) / jnp.sqrt(self.tab["lam"][ti])[:, None, None]
        n = jnp.sum(mask, 1)
        ab = self.tab["ab_L"][ti][:, None, None]
        Zt = lat.to_normalised(L, n, self.spec.c, self.spec.v)
        Z0 = lat.to_normalised(jnp.broadcast_to(self.L0, L.shape), n, self.spec.c, self.spec.v)
        eps = (Zt - jnp.sqrt(ab) * Z0) / jnp.sqrt(1 - ab)
        return {"coord": coord * mask[..., None], "lattice": eps,
                "type_logits": jnp.zeros(types.shape + (self.spec.K,))}


@pytest.fixture(scope="module")
def spec_and_crystal():
    c = _perovskite()
    spec = dm.spec_from_data([c, _perovskite(4.1)], "csp", T=100)
    return spec, c


def test_loss_is_zero_for_the_exact_denoiser(spec_and_crystal):
    spec, c = spec_and_crystal
    batch = jax.tree_util.tree_map(jnp.asarray, dm.prepare_batch(spec, [c] * 6))
    oracle = _Oracle(spec, batch["frac"][0], batch["lattice"][0])
    loss = dm.make_loss(spec, oracle, dtype=jnp.float64)
    total, m = jax.jit(lambda b, k: loss(None, b, k))(batch, jax.random.PRNGKey(0))
    assert float(m["loss_coord"]) < 1e-18 and float(m["loss_lattice"]) < 1e-18


def test_sampler_with_exact_score_recovers_the_data_point(spec_and_crystal, corrector=1):
    spec, c = spec_and_crystal
    b = dm.prepare_batch(spec, [c])
    oracle = _Oracle(spec, b["frac"][0], b["lattice"][0])
    init, step, grid = dm.make_sampler(spec, oracle, None, dm.SamplerConfig(n_steps=60, corrector_steps=corrector),
                                       dtype=jnp.float64)
    st = dm.run_sampler(init, step, grid, jax.random.PRNGKey(1), np.full(8, 5), np.repeat(b["types"], 8, 0),
                        progress=False)
    d = np.asarray(wn.wrapped_delta(st["frac"], jnp.asarray(b["frac"])))
    assert np.max(np.abs(d)) < 0.02  # final σ_min = 0.005
    np.testing.assert_allclose(np.asarray(st["lattice"]), np.broadcast_to(b["lattice"], (8, 3, 3)), atol=1e-6)
    crystals, why = dm.to_crystals(spec, st)
    assert all(x is not None for x in crystals), why


def test_deterministic_sampler_with_exact_score(spec_and_crystal):
    spec, c = spec_and_crystal
    b = dm.prepare_batch(spec, [c])
    oracle = _Oracle(spec, b["frac"][0], b["lattice"][0])
    init, step, grid = dm.make_sampler(spec, oracle, None, dm.SamplerConfig(n_steps=60, deterministic=True),
                                       dtype=jnp.float64)
    st = dm.run_sampler(init, step, grid, jax.random.PRNGKey(2), np.full(4, 5), np.repeat(b["types"], 4, 0),
                        progress=False)
    d = np.asarray(wn.wrapped_delta(st["frac"], jnp.asarray(b["frac"])))
    assert np.max(np.abs(d)) < 0.02
    np.testing.assert_allclose(np.asarray(st["lattice"])[0], b["lattice"][0], atol=1e-6)


def test_bad_inputs_raise_clear_errors(spec_and_crystal):
    spec, c = spec_and_crystal
    with pytest.raises(ElementError, match="never seen"):
        spec.class_of(dm.parse_composition("Ba1Ti1O3"))  # Ba is not in this model's vocabulary
    with pytest.raises(ConfigError, match="outside the trained range"):
        spec.check_n(spec.n_max + 1)
    with pytest.raises(ConfigError, match="empty range"):
        dm.parse_condition("band_gap=2.5..1.5")
    with pytest.raises(ConfigError, match="cannot parse"):
        dm.parse_composition("Ba1-Ti")
    assert dm.parse_composition("SrTiO3") == [38, 22, 8, 8, 8]
    assert dm.parse_condition("gap=1.5..2.5") == ("gap", "range", 1.5, 2.5)
    assert dm.parse_condition("gap>1")[:3] == ("gap", "ge", 1.0)
    with pytest.raises(ConfigError, match="impossible target"):
        gd.check_target(gd.Objective("gap", "range", 50.0, 60.0), 0.0, 5.0)
    gd.check_target(gd.Objective("gap", "ge", 1.0, math.inf), 0.0, 5.0)  # reachable: no error


def test_penalties_vanish_exactly_when_targets_are_met():
    f = jnp.asarray([0.5, 1.5, 2.0, 3.0])
    r = gd.Objective("p", "range", 1.0, 2.5)
    np.testing.assert_allclose(gd.penalty(f, r), [0.25, 0, 0, 0.25])
    np.testing.assert_allclose(gd.penalty(f, gd.Objective("p", "ge", 2.0, math.inf, scale=2.0)),
                               [(1.5 / 2) ** 2, (0.5 / 2) ** 2, 0, 0])
    np.testing.assert_allclose(gd.penalty(f, gd.Objective("p", "value", 2.0, 2.0)), [2.25, 0.25, 0, 1.0])
    assert list(gd.satisfied(f, r)) == [False, True, True, False]


class _FakePredictor:
    def __init__(self):
        from difcrys.nn.cgcnn import CGCNN, CGCNNConfig

        self.model = CGCNN(CGCNNConfig(atom_fea_len=8, n_conv=1, h_fea_len=8, n_h=1, dtype="float64"))
        self.variables = self.model.init(jax.random.PRNGKey(0))
        self.mean, self.std = 1.0, 0.5

        class C:
            k = 12
        self.config = C()


@pytest.mark.slow  # ~50 s on the loaded 2-core machine (host k-NN graphs + jit of the gradient)
def test_jittable_predictor_matches_host_graph_prediction():
    from difcrys.nn.cgcnn import featurize

    pr = _FakePredictor()
    rng = np.random.default_rng(0)
    crystals = [Crystal.create(["Sr", "Ti", "O", "O", "O"], rng.uniform(0, 1, (5, 3)),
                               np.eye(3) * 4.0 + 0.3 * rng.normal(size=(3, 3)), validate=False) for _ in range(3)]
    gdata = featurize(crystals, k=12, mode="knn")
    cr, g = gdata.take(np.arange(3))
    ref = pr.model.apply(pr.variables, cr, g)[0] * pr.std + pr.mean
    elements = (8, 22, 38)
    f = gd.predictor_fn(pr, elements, 5, images=2)
    spec_types = np.array([[2, 1, 0, 0, 0]] * 3)
    probs = jax.nn.one_hot(spec_types, 3, dtype=jnp.float64)
    got = jax.jit(f)(cr.frac, cr.lattice, probs, cr.mask)
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-10)
    # the gradient w.r.t. positions and lattice exists and is finite
    gx, gl = jax.grad(lambda x, l: jnp.sum(f(x, l, probs, cr.mask)), argnums=(0, 1))(cr.frac, cr.lattice)
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gl)) and float(jnp.abs(gx).max()) > 0


@pytest.mark.slow  # unrolled sampler + reverse-mode AD: ~30 s of compilation on the loaded machine
def test_latent_optimisation_decreases_the_objective(spec_and_crystal):
    from difcrys.nn.denoiser import CSPNet, DenoiserConfig

    spec, c = spec_and_crystal
    b = dm.prepare_batch(spec, [c] * 2)
    net = CSPNet(DenoiserConfig(n_types=spec.K, hidden=16, n_layers=1, n_freq=2, time_dim=8))
    params = net.init(jax.random.PRNGKey(0), b["types"], jnp.asarray(b["frac"], jnp.float32),
                      jnp.asarray(b["lattice"], jnp.float32), b["mask"], jnp.zeros(2), jnp.ones(2))
    target = 70.0  # Å^3

    def J(frac, L, probs, mask):
        return ((jnp.linalg.det(L) - target) / 10.0) ** 2

    res = gd.optimise_latent(spec, net, params, dm.SamplerConfig(n_steps=8), b["types"], b["n"], J, steps=15,
                             lr=0.1, decode_every=5, key=jax.random.PRNGKey(3), progress=False)
    h = res["history"]
    assert np.all(np.isfinite(h)) and h[-1] < 0.5 * h[0]
    assert [s for s, _ in res["decoded"]] == [0, 5, 10, 15]


@pytest.mark.slow  # ~30 s on the loaded machine (three sampler compilations)
def test_gradient_guidance_moves_samples_towards_the_target(spec_and_crystal):
    """With the exact denoiser of a point mass at volume V0, guidance towards a larger volume must
    increase the sampled volumes; a constant objective must change nothing."""
    spec, c = spec_and_crystal
    b = dm.prepare_batch(spec, [c])
    oracle = _Oracle(spec, b["frac"][0], b["lattice"][0])
    V0 = float(np.linalg.det(b["lattice"][0]))
    types = np.repeat(b["types"], 16, 0)

    def run(guidance):
        init, step, grid = dm.make_sampler(spec, oracle, None, dm.SamplerConfig(n_steps=50, corrector_steps=0),
                                           guidance=guidance, dtype=jnp.float64)
        st = dm.run_sampler(init, step, grid, jax.random.PRNGKey(5), np.full(16, 5), types, progress=False)
        return np.linalg.det(np.asarray(st["lattice"])), np.asarray(st["frac"])

    v_plain, x_plain = run(None)
    v_const, x_const = run((lambda x, L, p, m: jnp.zeros(x.shape[0]) + 0.0 * jnp.sum(x), 1.0, 1.0))
    np.testing.assert_allclose(v_const, v_plain, rtol=1e-10)
    np.testing.assert_allclose(x_const, x_plain, atol=1e-10)
    J = lambda x, L, p, m: ((jnp.linalg.det(L) - 2 * V0) / V0) ** 2  # wants twice the volume
    v_guided, _ = run((J, 1.0, 1.0))
    assert np.mean(v_guided) > np.mean(v_plain) + 0.01 * V0
