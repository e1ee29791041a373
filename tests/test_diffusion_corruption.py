"""Forward processes of the three corruptions against closed forms and brute-force numerics."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from difcrys.diffusion import lattice as lat
from difcrys.diffusion import masked
from difcrys.diffusion import wrapped_normal as wn
from difcrys.diffusion.schedules import make_schedules


# ------------------------------------------------------------------ wrapped normal (coordinates)
@pytest.mark.parametrize("sigma", [0.01, 0.5])
def test_truncated_score_matches_large_image_sum(sigma):
    K = wn.n_images(sigma)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0, 1, (200, 3)))
    x0 = jnp.asarray(rng.uniform(0, 1, (200, 3)))
    s_trunc = wn.score(x, x0, sigma, K)
    s_big = wn.score(x, x0, sigma, 50)
    scale = float(jnp.max(jnp.abs(s_big)))
    assert float(jnp.max(jnp.abs(s_trunc - s_big))) <= 1e-10 * max(scale, 1.0)
    # and the truncated log-density equals the 101-image one
    np.testing.assert_allclose(wn.logpdf(x, x0, sigma, K), wn.logpdf(x, x0, sigma, 50), rtol=0, atol=1e-10)


@pytest.mark.parametrize("sigma", [0.05, 0.4])
def test_score_is_gradient_of_log_density(sigma):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(0, 1, (20, 3)))
    x0 = jnp.asarray(rng.uniform(0, 1, (20, 3)))
    g = jax.grad(lambda y: jnp.sum(wn.logpdf(y, x0, sigma, 8)))(x)
    np.testing.assert_allclose(wn.score(x, x0, sigma, 8), g, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sigma", [0.1, 0.5])
def test_samples_follow_wrapped_normal_density(sigma):
    """Histogram of x_t = (x0 + σε) mod 1 vs N_W (1-D marginal; the kernel factorises)."""
    x0 = jnp.full((200_000, 3), 0.9)
    xt, _ = wn.sample(jax.random.PRNGKey(0), x0, sigma)
    d = np.asarray(wn.wrapped_delta(xt, x0)).ravel()
    hist, edges = np.histogram(d, bins=40, range=(-0.5, 0.5), density=True)
    mid = 0.5 * (edges[1:] + edges[:-1])
    ref = wn.pdf_1d(mid, sigma)
    assert np.all(np.asarray(xt) >= 0) and np.all(np.asarray(xt) < 1)
    # Poisson error of a density histogram: sqrt(p / (N * width)); allow 5 standard errors per bin
    tol = 5 * np.sqrt(ref / (d.size * (edges[1] - edges[0]))) + 1e-4
    assert np.all(np.abs(hist - ref) <= tol), np.max(np.abs(hist - ref) / tol)
    # normalisation of the density itself
    g = np.linspace(-0.5, 0.5, 20001)
    assert abs(np.trapezoid(wn.pdf_1d(g, sigma), g) - 1) < 1e-8


def test_score_norm_limits_and_monte_carlo():
    s = 0.01
    assert abs(wn.score_norm(s)[0] * s**2 - 1) < 1e-3          # Gaussian limit 1/σ²
    sig = 0.3
    x0 = jnp.zeros((100_000, 1))
    xt, _ = wn.sample(jax.random.PRNGKey(3), x0, sig)
    mc = float(jnp.mean(wn.score(xt, x0, sig, 6) ** 2))
    assert abs(mc / wn.score_norm(sig)[0] - 1) < 0.03


# ------------------------------------------------------------------ masked types
def test_masked_marginal_equals_product_of_Q():
    K, T = 4, 12
    sch = make_schedules(T)
    beta = sch.beta_types
    Qbar = np.eye(K + 1)
    for t in range(1, T + 1):
        Qbar = Qbar @ masked.q_matrix(beta[t], K)
        np.testing.assert_allclose(Qbar, masked.qbar_matrix(sch.alpha_bar_types[t], K), atol=1e-12)
        for a0 in range(K):
            np.testing.assert_allclose(masked.marginal_probs(jnp.asarray(a0), sch.alpha_bar_types[t], K), Qbar[a0],
                                       atol=1e-12)
    np.testing.assert_allclose(Qbar[:, K], 1.0)  # everything masked at t = T


def test_masked_posterior_matches_bayes_with_Q_matrices():
    K, T = 3, 10
    sch = make_schedules(T)
    ab, beta = sch.alpha_bar_types, sch.beta_types
    for t in range(2, T + 1):
        for s in (t - 1, max(0, t - 4)):
            Qts = np.eye(K + 1)  # transition s -> t
            for r in range(s + 1, t + 1):
                Qts = Qts @ masked.q_matrix(beta[r], K)
            Qs = masked.qbar_matrix(ab[s], K)
            Qt = masked.qbar_matrix(ab[t], K)
            for a0 in range(K):
                for at in range(K + 1):
                    if Qt[a0, at] == 0:
                        continue
                    brute = Qts[:, at] * Qs[a0, :] / Qt[a0, at]  # q(a_s | a_t, a_0), Bayes
                    got = masked.posterior_probs(jnp.asarray(at), jax.nn.one_hot(a0, K, dtype=jnp.float64),
                                                 ab[t], ab[s])
                    np.testing.assert_allclose(got, brute, atol=1e-12)


def test_masked_vb_term_equals_brute_force_kl():
    K = 5
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(K,)))
    p0 = jax.nn.softmax(logits)
    ab_t, ab_s = 0.3, 0.55
    for a0 in range(K):
        q = np.asarray(masked.posterior_probs(jnp.asarray(K), jax.nn.one_hot(a0, K, dtype=jnp.float64), ab_t, ab_s))
        p = np.asarray(masked.posterior_probs(jnp.asarray(K), p0, ab_t, ab_s))
        nz = q > 0
        kl = float(np.sum(q[nz] * np.log(q[nz] / p[nz])))
        assert abs(float(masked.vb_term(logits, jnp.asarray(a0), jnp.asarray(K), ab_t, ab_s)) - kl) < 1e-12


def test_masked_sampling_frequency():
    a0 = jnp.zeros((200_000,), jnp.int32) + 2
    at = masked.sample_marginal(jax.random.PRNGKey(0), a0, 0.37, 4)
    frac_kept = float(jnp.mean(at == 2))
    assert abs(frac_kept - 0.37) < 0.005 and bool(jnp.all((at == 2) | (at == 4)))


# ------------------------------------------------------------------ lattice
def test_symmetric_lattice_is_rotation_free_polar_factor():
    rng = np.random.default_rng(0)
    L = jnp.asarray(rng.normal(size=(3, 3)) + 4 * np.eye(3))
    S = lat.symmetric_lattice(L)
    np.testing.assert_allclose(S, S.T, atol=1e-12)
    np.testing.assert_allclose(S @ S.T, L @ L.T, atol=1e-10)  # same Gram matrix: same crystal
    assert np.all(np.linalg.eigvalsh(np.asarray(S)) > 0)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    R = q * np.sign(np.diag(r))
    R = R if np.linalg.det(R) > 0 else -R
    np.testing.assert_allclose(lat.symmetric_lattice(L @ R.T), S, atol=1e-10)


def test_lattice_marginal_moments():
    c, v, n, ab = 12.0, 60.0, 7, 0.4
    L0 = jnp.asarray(np.diag([4.0, 5.0, 6.0]) + 0.3 * (np.ones((3, 3)) - np.eye(3)))
    N = 100_000
    Lt, _ = lat.sample(jax.random.PRNGKey(0), jnp.broadcast_to(L0, (N, 3, 3)), jnp.full((N,), ab),
                       jnp.full((N,), n), c, v)
    Lt = np.asarray(Lt)
    mean_ref = np.sqrt(ab) * np.asarray(L0) + (1 - np.sqrt(ab)) * (n * c) ** (1 / 3) * np.eye(3)
    std_ref = np.sqrt(1 - ab) * (n * v) ** (1 / 3)
    np.testing.assert_allclose(Lt.mean(0), mean_ref, atol=5 * std_ref / np.sqrt(N))
    np.testing.assert_allclose(Lt.std(0), std_ref, rtol=0.01)
    np.testing.assert_allclose(Lt, np.swapaxes(Lt, 1, 2))  # stays symmetric


def test_lattice_prior_snr_is_independent_of_n():
    c, v = 14.5, 72.7
    ref = (c / v) ** (1 / 3)
    for n in (1, 2, 5, 13, 24, 50):
        assert abs(float(lat.snr(n, c, v)) - ref) < 1e-12
        # empirical: |mean| / std of diagonal entries of prior samples
        L = np.asarray(lat.prior_sample(jax.random.PRNGKey(n), jnp.full((40_000,), n), c, v))
        d = L[:, 0, 0]
        assert abs(d.mean() / d.std() / ref - 1) < 0.03


def test_lattice_posterior_step_reaches_clean_value_with_true_noise():
    """With the exact noise, the deterministic posterior mean to s = 0 returns L_0."""
    c, v, n = 12.0, 60.0, jnp.asarray([5])
    L0 = jnp.asarray(np.diag([4.0, 4.5, 5.0]))[None]
    Lt, eps = lat.sample(jax.random.PRNGKey(1), L0, jnp.asarray([0.3]), n, c, v)
    back = lat.posterior_step(None, Lt, eps, 0.3, 1.0, n, c, v, noise=False)
    np.testing.assert_allclose(back, L0, atol=1e-10)
