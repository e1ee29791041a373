"""Density mixing for the SCF fixed point ρ = F(ρ), as ``(init, step)`` pairs.

``step(state, rho_in, rho_out) -> (rho_next, state)`` works on flattened real-space
densities. Preconditioners act on the residual ``R = F(ρ) − ρ``:

* simple (linear) mixing, the seed's ``ρ_{n+1} = ρ_n + α (F(ρ_n) − ρ_n)``;
* Kerker: ``R(G) ← G²/(G² + k₀²) R(G)`` (G. P. Kerker, Phys. Rev. B 23, 3082 (1981));
* Anderson/Pulay (DIIS): ``ρ_{n+1} = ρ_n + αPR_n − Σ_i γ_i (Δρ_i + αPΔR_i)``, ``γ`` from
  least squares on the last ``m`` residual differences (D. G. Anderson, J. ACM 12,
  547 (1965); P. Pulay, Chem. Phys. Lett. 73, 393 (1980)).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class Mixer(NamedTuple):
    init: Callable
    step: Callable


def kerker_preconditioner(g2, k0: float, to_g: Callable, to_r: Callable) -> Callable:
    """Return ``P(R)`` applying ``G²/(G²+k₀²)`` in reciprocal space (identity if k0 = 0)."""
    if k0 <= 0:
        return lambda r: r
    fac = g2 / (g2 + k0**2)

    def apply(r):
        shape = r.shape
        return to_r(fac * to_g(r.reshape(shape))).reshape(shape)

    return apply


def simple_mixing(alpha: float = 0.5, precond: Callable = lambda r: r) -> Mixer:
    def init(rho):
        return ()

    def step(state, rho_in, rho_out):
        return rho_in + alpha * precond(rho_out - rho_in), state

    return Mixer(init, step)


class AndersonState(NamedTuple):
    dx: jax.Array  # [m, N] differences of inputs
    dr: jax.Array  # [m, N] differences of preconditioned residuals
    last_x: jax.Array
    last_r: jax.Array
    count: jax.Array


def anderson_mixing(alpha: float = 0.8, history: int = 8, precond: Callable = lambda r: r,
                    regularization: float = 1e-12) -> Mixer:
    def init(rho):
        x = rho.reshape(-1)
        z = jnp.zeros((history, x.size), x.dtype)
        return AndersonState(z, z, x, jnp.zeros_like(x), jnp.zeros((), jnp.int32))

    def step(state, rho_in, rho_out):
        shape = rho_in.shape
        x = rho_in.reshape(-1)
        r = precond((rho_out - rho_in)).reshape(-1)
        slot = jnp.mod(state.count - 1, history)
        have_prev = state.count > 0
        dx = jnp.where(have_prev, state.dx.at[slot].set(x - state.last_x), state.dx)
        dr = jnp.where(have_prev, state.dr.at[slot].set(r - state.last_r), state.dr)
        n_hist = jnp.minimum(state.count, history)
        valid = jnp.arange(history) < n_hist
        A = dr @ dr.T
        A = jnp.where(valid[:, None] & valid[None, :], A, 0.0)
        scale = jnp.maximum(jnp.max(jnp.abs(jnp.diag(A))), 1e-300)
        A = A + jnp.diag(jnp.where(valid, regularization * scale, 1.0))
        b = jnp.where(valid, dr @ r, 0.0)
        gamma = jnp.linalg.solve(A, b)
        x_new = x + alpha * r - gamma @ (dx + alpha * dr)
        new = AndersonState(dx, dr, x, r, state.count + 1)
        return x_new.reshape(shape), new

    return Mixer(init, step)
