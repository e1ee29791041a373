"""Implicit differentiation of the SCF fixed point against central finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difcrys.crystal import Crystal
from difcrys.dft import response as R
from difcrys.dft.scf import prepare, run_scf
from difcrys.units import BOHR_ANG

FCC = np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])


def _si(frac=((0, 0, 0), (0.25, 0.25, 0.25))):
    return Crystal.create([14, 14], np.asarray(frac), FCC * 10.26 * BOHR_ANG)


def test_gap_strain_derivative_matches_finite_difference():
    """d(gap)/d(isotropic strain) at fixed basis: implicit (GMRES on the response equation) vs FD."""
    setup, params = prepare(_si(), 5.0, (2, 2, 2))

    def gap(e):
        return R.band_gap(setup, dict(params, lattice=params["lattice"] * (1 + e)))

    g = float(jax.jit(jax.grad(gap))(0.0))
    f = jax.jit(gap)
    h = 1e-4
    fd = float((f(h) - f(-h)) / (2 * h))
    assert g == pytest.approx(fd, rel=1e-5)
    # the SCF solved by the jitted loop agrees with the host driver
    res = run_scf(setup=setup, params=params, tol=1e-11, rho_tol=1e-9, progress=False)
    assert float(f(0.0)) == pytest.approx(res.gap()["gap"], abs=1e-7)


def test_eigenvalue_position_derivative_and_psp_derivative():
    """d(ε)/d(position) (no symmetry: the displacement breaks it) and d(E)/d(r_loc) vs FD."""
    setup, params = prepare(_si(((0.01, -0.02, 0.0), (0.25, 0.27, 0.24))), 4.0, (1, 1, 1), symmetry=False)
    L = params["lattice"]

    def eig(dx):
        cart = params["frac"] @ L
        cart = cart.at[1, 0].add(dx)
        p = dict(params, frac=cart @ jnp.linalg.inv(L))
        return R.converged_eigenvalues(setup, p)[0, 0]  # lowest state at Γ (non-degenerate)

    g = float(jax.jit(jax.grad(eig))(0.0))
    f = jax.jit(eig)
    h = 1e-3
    fd = float((f(h) - f(-h)) / (2 * h))
    assert g == pytest.approx(fd, rel=1e-5)

    def energy(dr):
        psp = dict(params["psp"], rloc=params["psp"]["rloc"] + dr)
        return R.total_energy(setup, dict(params, psp=psp))

    ge = float(jax.jit(jax.grad(energy))(0.0))
    fe = jax.jit(energy)
    h = 1e-4
    fde = float((fe(h) - fe(-h)) / (2 * h))
    assert ge == pytest.approx(fde, rel=1e-5)
    assert np.isfinite(ge) and np.isfinite(g)
