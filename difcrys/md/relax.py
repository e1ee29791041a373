"""FIRE relaxation of atomic positions and (optionally) the cell with a learned potential.

FIRE (Bitzek, Koskinen, Gähler, Moseler, Gumbsch, Phys. Rev. Lett. 97, 170201 (2006)) with ASE's
parameters and step limit (``dt = 0.1``, ``dt_max = 1.0``, ``N_min = 5``, ``f_inc = 1.1``,
``f_dec = 0.5``, ``α_0 = 0.1``, ``f_α = 0.99``, ``max_step = 0.2 Å``), as an ``(init, step)``-style
``lax.while_loop`` with an iteration cap.

Cell degrees of freedom follow ASE's ``UnitCellFilter``: a deformation ``ε`` of the initial cell,
``L = L_0 (I + ε)``, positions ``C = u (I + ε)`` with reference positions ``u``; generalized forces
``−∂H/∂u`` and ``−∂H/∂ε / N`` (``cell_factor = N``) for the enthalpy ``H = E + P V``. Converged
when every atomic force and every ``|(V/N) (σ + P)|`` component is below ``fmax``.
The neighbour graph (built at ``cutoff + skin``) is rebuilt every step inside the loop; overflow
stops the loop, and the host grows the graph and continues.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.crystal import Crystal
from difcrys.errors import CapacityError, ConfigError
from difcrys.graph import build_graph, plan_graph
from difcrys.units import GPA_EV_PER_ANG3

__all__ = ["RelaxResult", "fire_relax"]


@dataclasses.dataclass
class RelaxResult:
    """Relaxed crystal, energy [eV], max atomic force [eV/Å], stress [GPa], steps, converged flag."""

    crystal: Crystal
    energy: float
    fmax: float
    stress: np.ndarray
    n_steps: int
    converged: bool
    energies: np.ndarray


def fire_relax(potential, params, crystal: Crystal, *, fmax: float = 1e-3, max_steps: int = 2000,
               relax_cell: bool = False, pressure_gpa: float = 0.0, skin: float = 1.0,
               max_step: float = 0.2, dt_start: float = 0.1, dt_max: float = 1.0) -> RelaxResult:
    """Relax positions (and the cell) with FIRE until all generalized forces are below ``fmax``.

    Args:
        potential, params: the model.
        crystal: initial structure (unpadded).
        fmax: convergence threshold [eV/Å] (cell components: ``V σ / N`` in eV).
        max_steps: iteration cap.
        relax_cell: also relax the lattice (all 9 components of the deformation).
        pressure_gpa: external hydrostatic pressure [GPa] (cell relaxation).
        skin: extra graph radius [Å]; larger cell changes trigger a regrown plan.

    Returns:
        :class:`RelaxResult` (``converged`` False if the cap was hit).
    """
    if not (float(fmax) > 0) or int(max_steps) < 1:
        raise ConfigError(f"fmax must be > 0 and max_steps >= 1, got {fmax}, {max_steps}")
    crystal.validate()
    potential.check_numbers(crystal.numbers, crystal.mask)
    numbers = jnp.asarray(crystal.numbers)
    mask = jnp.asarray(crystal.mask)
    L0 = jnp.asarray(crystal.lattice, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    dtype = L0.dtype
    u0 = jnp.asarray(crystal.positions, dtype)
    n = int(np.asarray(mask).sum())
    rc = potential.config.cutoff + float(skin)
    plan = plan_graph(crystal, rc, headroom=1.6, bin_headroom=2.0)
    p_ev = float(pressure_gpa) * GPA_EV_PER_ANG3
    cell_on = 1.0 if relax_cell else 0.0
    amask = mask[:, None]

    def unpack(x):
        return x[:-3], x[-3:]

    def enthalpy(x, graph):
        u, eps = unpack(x)
        d = jnp.eye(3, dtype=dtype) + cell_on * eps
        L = L0 @ d
        e = potential.energy_from_positions(params, numbers, u @ d, L, mask, graph)
        return e + p_ev * jnp.abs(jnp.linalg.det(L)), e

    def graph_at(x, plan):
        u, eps = unpack(x)
        d = jnp.eye(3, dtype=dtype) + cell_on * eps
        L = L0 @ d
        c = Crystal(numbers=numbers, frac=(u @ d) @ jnp.linalg.inv(L), lattice=L, mask=mask)
        return build_graph(c, rc, plan)

    def gen_forces(x, graph):
        (h, e), g = jax.value_and_grad(enthalpy, has_aux=True)(x, graph)
        f = -g
        fu, fe = unpack(f)
        fu = jnp.where(amask, fu, 0.0)
        fe = cell_on * fe / n
        return jnp.concatenate([fu, fe]), e

    def converged_of(f):
        fu, fe = unpack(f)
        return jnp.maximum(jnp.max(jnp.linalg.norm(fu, axis=-1)), jnp.max(jnp.abs(fe))) < fmax

    def make_run(plan):
        @jax.jit
        def run(x, v, dt, a, npos, k, energies):
            def cond(s):
                x, v, dt, a, npos, k, energies, done, over = s
                return (~done) & (~over) & (k < max_steps)

            def body(s):
                x, v, dt, a, npos, k, energies, done, over = s
                g = graph_at(x, plan)
                f, e = gen_forces(x, g)
                energies = energies.at[k].set(e)
                done = converged_of(f)
                vf = jnp.vdot(f, v)
                fnorm = jnp.sqrt(jnp.vdot(f, f))
                vnorm = jnp.sqrt(jnp.vdot(v, v))
                pos_ = vf > 0
                v = jnp.where(pos_, (1 - a) * v + a * f / jnp.where(fnorm > 0, fnorm, 1.0) * vnorm, 0.0)
                grow = pos_ & (npos > 5)
                dt = jnp.where(pos_, jnp.where(grow, jnp.minimum(dt * 1.1, dt_max), dt), dt * 0.5)
                a = jnp.where(pos_, jnp.where(grow, a * 0.99, a), 0.1)
                npos = jnp.where(pos_, npos + 1, 0)
                v = v + dt * f
                dr = dt * v
                nd = jnp.sqrt(jnp.vdot(dr, dr))
                dr = jnp.where(nd > max_step, dr * max_step / jnp.where(nd > 0, nd, 1.0), dr)
                x = jnp.where(done | g.overflow, x, x + dr)
                return x, v, dt, a, npos, k + 1, energies, done, g.overflow

            s = (x, v, dt, a, npos, k, energies, jnp.asarray(False), jnp.asarray(False))
            return jax.lax.while_loop(cond, body, s)
        return run

    x = jnp.concatenate([u0, jnp.zeros((3, 3), dtype)])
    v = jnp.zeros_like(x)
    dt, a, npos, k = jnp.asarray(dt_start, dtype), jnp.asarray(0.1, dtype), jnp.asarray(0), jnp.asarray(0)
    energies = jnp.full((int(max_steps) + 1,), jnp.nan, dtype)
    run = make_run(plan)
    for _ in range(20):
        x, v, dt, a, npos, k, energies, done, over = run(x, v, dt, a, npos, k, energies)
        if not bool(over):
            break
        g = graph_at(x, plan)
        need = int(np.asarray(g.n_edges))
        plan = plan_graph(_crystal_of(x, L0, numbers, mask, cell_on), rc, max_edges=max(int(1.3 * need), plan.max_edges),
                          headroom=1.6, bin_headroom=2.0)
        run = make_run(plan)
        k = k - 1  # redo the interrupted step
    else:
        raise CapacityError("relaxation neighbour graph kept overflowing")
    final = _crystal_of(x, L0, numbers, mask, cell_on)
    out = potential.compute(params, final)
    fu = out["forces"]
    return RelaxResult(crystal=final, energy=float(out["energy"]), fmax=float(np.max(np.linalg.norm(fu, axis=-1))),
                       stress=out["stress"], n_steps=int(k), converged=bool(done),
                       energies=np.asarray(energies)[: int(k)])


def _crystal_of(x, L0, numbers, mask, cell_on) -> Crystal:
    x = np.asarray(x)
    u, eps = x[:-3], x[-3:]
    d = np.eye(3) + cell_on * eps
    L = np.asarray(L0) @ d
    return Crystal(numbers=np.asarray(numbers), frac=(u @ d) @ np.linalg.inv(L), lattice=L, mask=np.asarray(mask))
