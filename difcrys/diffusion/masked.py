"""Absorbing-state (MASK) discrete diffusion of atom types (D3PM / MaskGIT family).

Types are integer classes ``0 … K−1`` (indices into the model's element vocabulary) and the extra
absorbing class ``MASK = K``. One forward step is the seed's (MatterGen's) transition matrix

.. math::  [Q_t]_{ij} = \\begin{cases} 1 & i = j = m \\\\ 1-β_t & i = j ≠ m \\\\ β_t & j = m ≠ i
           \\\\ 0 & \\text{otherwise} \\end{cases}

(Austin et al., "Structured denoising diffusion models in discrete state-spaces", NeurIPS 2021,
App. A.2.2), so ``q(a_t | a_0) = a_0 \\bar Q_t`` with ``\\bar Q_t = Q_1 ⋯ Q_t`` keeps the type with
probability ``ᾱ_t = ∏_{s≤t}(1 − β_s)`` and masks it otherwise. The posterior between any two
steps ``s < t`` (Bayes on ``\\bar Q``) is

* ``a_t ≠ MASK``: ``a_s = a_t`` with probability 1;
* ``a_t = MASK``: ``a_s = a_0`` with probability ``(ᾱ_s − ᾱ_t)/(1 − ᾱ_t)``, MASK otherwise.

With the network's ``p_θ(a_0 | M_t)`` in place of the one-hot ``a_0`` this is the D3PM
``x_0``-parameterised reverse step. The D3PM variational term
``KL(q(a_s|a_t,a_0) ‖ p_θ(a_s|a_t))`` of a masked atom reduces to
``(ᾱ_s − ᾱ_t)/(1 − ᾱ_t) · (−log p_θ(a_0))`` (:func:`vb_term`); the MaskGIT-style training loss is the
cross-entropy on masked atoms (:func:`masked_cross_entropy`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["q_matrix", "qbar_matrix", "marginal_probs", "sample_marginal", "posterior_probs",
           "sample_posterior", "masked_cross_entropy", "vb_term"]


def q_matrix(beta: float, K: int) -> np.ndarray:
    """The one-step ``(K+1) × (K+1)`` transition matrix ``Q_t`` (rows: from, columns: to)."""
    Q = (1.0 - beta) * np.eye(K + 1)
    Q[:, K] += beta
    Q[K, K] = 1.0
    return Q


def qbar_matrix(alpha_bar: float, K: int) -> np.ndarray:
    """``\\bar Q_t`` in closed form: keep with ``ᾱ_t``, mask with ``1 − ᾱ_t``."""
    return q_matrix(1.0 - alpha_bar, K)


def marginal_probs(a0, alpha_bar, K: int):
    """``q(a_t | a_0)`` ``[..., K+1]`` for integer ``a0`` ``[...]``."""
    ab = jnp.asarray(alpha_bar)[..., None]
    oh = jax.nn.one_hot(a0, K + 1, dtype=ab.dtype)
    return ab * oh + (1 - ab) * jax.nn.one_hot(K, K + 1, dtype=ab.dtype)


def sample_marginal(key, a0, alpha_bar, K: int):
    """Draw ``a_t ∼ q(a_t | a_0)``: each atom is independently masked with probability ``1 − ᾱ_t``."""
    u = jax.random.uniform(key, jnp.shape(a0))
    return jnp.where(u < alpha_bar, a0, K)


def posterior_probs(a_t, p0, ab_t, ab_s):
    """Reverse kernel ``q(a_s | a_t, a_0)`` ``[..., K+1]`` for ``s < t`` (module docstring).

    Args:
        a_t: ``[...]`` integer states (``K`` = MASK).
        p0: ``[..., K]`` distribution of ``a_0`` over real classes (one-hot for the true posterior,
            ``p_θ(a_0 | M_t)`` for the model's reverse step).
        ab_t, ab_s: survival probabilities ``ᾱ_t ≤ ᾱ_s``.
    """
    K = p0.shape[-1]
    ab_t = jnp.asarray(ab_t, p0.dtype)[..., None]
    ab_s = jnp.asarray(ab_s, p0.dtype)[..., None]
    unmask = (ab_s - ab_t) / jnp.maximum(1 - ab_t, 1e-12)
    masked_row = jnp.concatenate([unmask * p0, 1 - unmask], axis=-1)
    keep_row = jax.nn.one_hot(a_t, K + 1, dtype=p0.dtype)
    return jnp.where((a_t == K)[..., None], masked_row, keep_row)


def sample_posterior(key, a_t, logits, ab_t, ab_s, temperature: float = 1.0):
    """Ancestral step ``a_s ∼ Σ_{a_0} q(a_s | a_t, a_0) p_θ(a_0 | M_t)`` (already-unmasked atoms are kept).

    Args:
        logits: ``[..., K]`` model logits of ``a_0``.
    """
    K = logits.shape[-1]
    k1, k2 = jax.random.split(key)
    ab_t = jnp.asarray(ab_t, logits.dtype)
    ab_s = jnp.asarray(ab_s, logits.dtype)
    unmask_p = (ab_s - ab_t) / jnp.maximum(1 - ab_t, 1e-12)
    draw = jax.random.categorical(k1, logits / temperature, axis=-1)
    u = jax.random.uniform(k2, jnp.shape(a_t))
    new = jnp.where(u < unmask_p, draw, K)
    return jnp.where(a_t == K, new, a_t)


def masked_cross_entropy(logits, a0, a_t, mask):
    """MaskGIT/D3PM-style loss: mean ``−log p_θ(a_0 | M_t)`` over real atoms that are masked in ``a_t``.

    Returns ``(loss, n_masked)``; 0 when no atom is masked.
    """
    K = logits.shape[-1]
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.clip(a0, 0, K - 1)[..., None], axis=-1)[..., 0]
    w = (mask & (a_t == K)).astype(logits.dtype)
    n = jnp.sum(w)
    return jnp.sum(nll * w) / jnp.maximum(n, 1.0), n


def vb_term(logits, a0, a_t, ab_t, ab_s):
    """``KL(q(a_s|a_t,a_0) ‖ p_θ(a_s|a_t))`` per atom ``[...]`` (closed form, module docstring)."""
    K = logits.shape[-1]
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.clip(a0, 0, K - 1)[..., None], axis=-1)[..., 0]
    w = (jnp.asarray(ab_s) - jnp.asarray(ab_t)) / jnp.maximum(1 - jnp.asarray(ab_t), 1e-12)
    return jnp.where(a_t == K, w * nll, 0.0)
