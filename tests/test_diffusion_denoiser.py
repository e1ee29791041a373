"""Invariances of the periodic denoiser (CSPNet): permutations, fractional translations, rotations."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from difcrys.nn.denoiser import CSPNet, DenoiserConfig, adapter_mask


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.fixture(scope="module")
def setup():
    cfg = DenoiserConfig(n_types=6, hidden=24, n_layers=2, n_freq=3, n_cond=1, time_dim=8)
    net = CSPNet(cfg)
    rng = np.random.default_rng(0)
    B, n = 2, 5
    types = jnp.asarray(rng.integers(0, 7, (B, n)), jnp.int32)
    frac = jnp.asarray(rng.uniform(0, 1, (B, n, 3)))
    L = jnp.asarray(rng.normal(size=(B, 3, 3)) * 0.5 + 4 * np.eye(3))
    mask = jnp.asarray([[True] * 5, [True, True, True, False, False]])
    t = jnp.asarray([0.3, 0.8])
    scale = jnp.asarray([3.0, 3.5])
    cond = jnp.asarray([[0.5], [-1.0]])
    cmask = jnp.asarray([True, False])
    params = jax.jit(net.init)(jax.random.PRNGKey(0), types, frac, L, mask, t, scale, cond, cmask)
    # make the zero-initialised adapters non-trivial so that they are tested too
    params = jax.tree_util.tree_map(lambda p: p + 0.05 * jnp.ones_like(p), params)
    f = jax.jit(lambda ty, x, l: net.apply(params, ty, x, l, mask, t, scale, cond, cmask))
    return f, types, frac, L, mask, rng


def test_permutation_equivariance(setup):
    f, types, frac, L, mask, rng = setup
    out = f(types, frac, L)
    perm = np.concatenate([rng.permutation(5)[None], np.concatenate([rng.permutation(3), [3, 4]])[None]])
    take = lambda a: jnp.take_along_axis(a, jnp.asarray(perm).reshape(perm.shape + (1,) * (a.ndim - 2)), axis=1)
    out_p = f(take(types), take(frac), L)
    np.testing.assert_allclose(out_p["coord"], take(out["coord"]), atol=1e-10)
    np.testing.assert_allclose(out_p["type_logits"], take(out["type_logits"]), atol=1e-10)
    np.testing.assert_allclose(out_p["lattice"], out["lattice"], atol=1e-10)


def test_fractional_translation_and_periodic_image_invariance(setup):
    f, types, frac, L, mask, rng = setup
    out = f(types, frac, L)
    shift = jnp.asarray(rng.uniform(0, 1, (2, 1, 3)))
    images = jnp.asarray(rng.integers(-2, 3, frac.shape))
    out_t = f(types, (frac + shift) % 1.0 + images, L)
    for k in ("coord", "type_logits", "lattice"):
        np.testing.assert_allclose(out_t[k], out[k], atol=1e-9)


def test_rotation_invariance_through_the_symmetric_representation(setup):
    """A rotated crystal (L Rᵀ, same fractional coordinates) has the same symmetric lattice, hence the
    same denoiser outputs; the outputs do depend on the lattice otherwise."""
    from difcrys.diffusion.lattice import symmetric_lattice

    f, types, frac, L, mask, rng = setup
    R = jnp.asarray(_random_rotation(rng))
    S = symmetric_lattice(L)
    S_rot = symmetric_lattice(L @ R.T)
    np.testing.assert_allclose(S_rot, S, atol=1e-10)
    out, out_r = f(types, frac, S), f(types, frac, S_rot)
    for k in ("coord", "type_logits", "lattice"):
        np.testing.assert_allclose(out_r[k], out[k], atol=1e-8)
    out_s = f(types, frac, symmetric_lattice(L @ jnp.diag(jnp.asarray([1.1, 1.0, 1.0]))))  # a strain
    assert float(jnp.max(jnp.abs(out_s["coord"] - out["coord"]))) > 1e-6
    assert float(jnp.max(jnp.abs(out_s["lattice"] - out["lattice"]))) > 1e-6


def test_padding_atoms_do_not_influence_real_atoms(setup):
    f, types, frac, L, mask, rng = setup
    out = f(types, frac, L)
    frac2 = frac.at[1, 3:].set(jnp.asarray(rng.uniform(0, 1, (2, 3))))
    types2 = types.at[1, 3:].set(0)
    out2 = f(types2, frac2, L)
    np.testing.assert_allclose(out2["coord"][1, :3], out["coord"][1, :3], atol=1e-10)
    np.testing.assert_allclose(out2["lattice"][1], out["lattice"][1], atol=1e-10)


def test_adapter_mask_selects_conditioning_parameters(setup):
    cfg = DenoiserConfig(n_types=3, hidden=8, n_layers=1, n_freq=1, n_cond=1, time_dim=4)
    net = CSPNet(cfg)
    z = jnp.zeros((1, 2), jnp.int32)
    p = jax.jit(net.init)(jax.random.PRNGKey(0), z, jnp.zeros((1, 2, 3)), jnp.eye(3)[None] * 4,
                          jnp.ones((1, 2), bool), jnp.zeros(1), jnp.ones(1), jnp.zeros((1, 1)), jnp.ones(1, bool))
    m = adapter_mask(p)
    flat = jax.tree_util.tree_flatten_with_path(m)[0]
    names = {jax.tree_util.keystr(k): v for k, v in flat}
    assert any(v for k, v in names.items() if "adapter_0_out" in k)
    assert not any(v for k, v in names.items() if "edge_0" in k)
    # a fresh adapter (zero output layer) leaves the function unchanged: cond vs null give the same output
    args = (z, jnp.asarray([[[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]]]), jnp.eye(3)[None] * 4, jnp.ones((1, 2), bool),
            jnp.asarray([0.5]), jnp.ones(1))
    app = jax.jit(net.apply)
    a = app(p, *args, jnp.asarray([[2.0]]), jnp.asarray([True]))
    b = app(p, *args, jnp.asarray([[-3.0]]), jnp.asarray([True]))
    np.testing.assert_allclose(a["coord"], b["coord"], atol=1e-12)
