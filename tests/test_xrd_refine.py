"""Rietveld-like refinement: symmetry parametrisation and recovery of a known structure."""

import numpy as np
import pytest

from difcrys.crystal import Crystal
from difcrys.errors import ConfigError
from difcrys.xrd.api import crystal_from_pymatgen, simulate_profile
from difcrys.xrd.pattern import Profile
from difcrys.xrd.refine import Phase, perturb, refine
from difcrys.xrd.symmetry_params import symmetry_params


def _rutile():
    from pymatgen.core import Lattice, Structure

    s = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"],
                                  [[0, 0, 0], [0.3048, 0.3048, 0]])
    return crystal_from_pymatgen(s)[0]


def test_symmetry_parametrisation_counts_and_invariance():
    import spglib

    c = _rutile()
    sp = symmetry_params(c)
    # tetragonal metric: a, c; rutile O on 4f (x, x, 0): one free coordinate; two B orbits
    assert sp.number == 136 and sp.n_metric == 2 and sp.n_free_coords == 1 and sp.n_orbits == 2
    # any move along the free parameters keeps the space group
    p = perturb(c, 3, lattice=0.02, frac=0.02)
    ds = spglib.get_symmetry_dataset((np.asarray(p.lattice), np.asarray(p.frac), np.asarray(p.numbers)),
                                     symprec=1e-5)
    assert ds.number == 136
    a0, c0 = np.linalg.norm(np.asarray(c.lattice), axis=1)[[0, 2]]
    a1, c1 = np.linalg.norm(np.asarray(p.lattice), axis=1)[[0, 2]]
    assert abs(abs(a1 / a0 - 1) - 0.02) < 1e-3 and abs(abs(c1 / c0 - 1) - 0.02) < 1e-3


def test_triclinic_has_all_parameters_free():
    c = Crystal.create(["Si", "O", "O"], [[0.1, 0.2, 0.3], [0.6, 0.1, 0.4], [0.3, 0.7, 0.8]],
                       [[5.0, 0.3, 0.1], [0.2, 6.0, 0.4], [0.3, 0.1, 7.0]])
    sp = symmetry_params(c)
    assert sp.number in (1, 2) and sp.n_metric == 6


def test_refinement_recovers_structure_from_noisy_pattern():
    truth = _rutile()
    tt = np.arange(20.0, 90.0, 0.04)
    prof = Profile(U=0.01, V=-0.005, W=0.004, eta0=0.4, eta1=0.002, zero=0.03)
    B = np.array([0.4, 0.4, 0.6, 0.6, 0.6, 0.6])
    y = simulate_profile(truth, tt, "CuKa", doublet=True, profile=prof, table="waasmaier_kirfel", B=B)
    y = y / y.max() * 5000 + 100 + 0.5 * tt
    obs = np.random.default_rng(0).poisson(y).astype(float)
    start = perturb(truth, 1, lattice=0.02, frac=0.02)
    res = refine((tt, obs), Phase(start, name="TiO2"), schedule=(1.0, 0.4, 0.15, 0.0), max_iter=30)
    P = res.parameters
    assert abs(P["TiO2.a"][0] - 4.594) < 2e-3 and abs(P["TiO2.c"][0] - 2.959) < 2e-3
    assert abs(P["TiO2.O1.x"][0] - 0.3048) < 3e-3
    assert abs(P["zero"][0] - 0.03) < 5e-3
    # the fit reaches the noise level: chi² ~ 1, and the errors are consistent with the esds
    assert res.chi2 < 1.3
    assert abs(P["TiO2.a"][0] - 4.594) < 5 * P["TiO2.a"][1] + 2e-4
    assert np.allclose(np.asarray(res.crystals[0].lattice)[2], [0, 0, P["TiO2.c"][0]], atol=1e-6)


def test_refine_bad_input():
    c = _rutile()
    tt = np.linspace(20, 80, 100)
    with pytest.raises(ConfigError, match="NaN"):
        refine((tt, np.where(tt > 50, np.nan, 1.0)), c)
    with pytest.raises(ConfigError, match="matching"):
        refine((tt, np.ones(50)), c)
    with pytest.raises(ConfigError, match="unknown refinement group"):
        refine((tt, np.ones(100)), Phase(c, refine=("lattice", "spin")))
    with pytest.raises(ConfigError, match="2θ range"):
        refine((tt, np.ones(100)), c, two_theta_range=(70, 60))
