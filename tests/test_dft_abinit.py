"""Plane-wave DFT against ABINIT 9.6.2 at identical settings.

The reference values in tests/data/abinit_refs.json were produced by
tests/data/make_abinit_refs.py (same GTH-PADE parameters written as ABINIT
pspcod-10 files, same ecut, k-points, FFT grid, smearing; see the file's
"conventions"). We evaluate at ABINIT's own irreducible k-points so that
eigenvalues compare one to one.
"""

import json
import pathlib

import numpy as np
import pytest

from difcrys.crystal import Crystal
from difcrys.dft import derivatives
from difcrys.dft.scf import run_scf
from difcrys.units import BOHR_ANG, HARTREE_EV

REFS = json.loads((pathlib.Path(__file__).parent / "data" / "abinit_refs.json").read_text())["systems"]
SMEAR = {3: "fermi-dirac", 4: "cold-a", 7: "gaussian"}
XC = {1: "lda-teter", -1012: "lda-pw92", 7: "lda-pw92"}

FAST = ["si2_ecut8_k222", "si2_pw92_libxc", "al_gauss", "al_cold", "si2_displaced_k222"]
SLOW = [k for k in REFS if k not in FAST]


def _run(name):
    s, r = REFS[name]["settings"], REFS[name]["results"]
    sm = s["smearing"]
    crystal = Crystal.create(s["numbers"], s["frac"], np.array(s["lattice_bohr"]) * BOHR_ANG)
    res = run_scf(crystal, s["ecut"], s["kgrid"], kpoints=(r["kpoints"], r["kpoint_weights"]),
                  fft_shape=s["ngfft"], n_bands=s["nband"], smearing=SMEAR[sm["occopt"]] if sm else "none",
                  width=sm["tsmear"] if sm else 0.0, xc=XC[s["ixc"]], tol=1e-11, rho_tol=1e-9, progress=False)
    return res, s, r


def _check(name):
    res, s, r = _run(name)
    n = len(s["numbers"])
    assert res.converged
    # total energy within 1e-5 Ha/atom (measured: ~1e-11)
    assert abs(res.energy - r["etotal"]) / n < 1e-5
    # every term of ABINIT's decomposition
    names = {"kinetic": "Kinetic energy", "hartree": "Hartree energy", "xc": "XC energy", "ewald": "Ewald energy",
             "psp_core": "PspCore energy", "local": "Loc. psp. energy", "nonlocal": "NL   psp  energy",
             "entropy": "-kT*entropy"}
    for ours, theirs in names.items():
        assert res.terms[ours] == pytest.approx(r["energies"][theirs], abs=1e-6), ours
    # eigenvalues within 1 meV (measured: ~1e-6 meV)
    eig_ref = np.array(r["eigenvalues"][0])[:, : res.eigenvalues.shape[1]]
    assert np.max(np.abs(res.eigenvalues - eig_ref)) * HARTREE_EV < 1e-3
    if s["smearing"]:
        assert res.fermi_level == pytest.approx(r["fermie"], abs=1e-6)
    if s.get("forces"):
        f = np.asarray(derivatives.forces_au(res))
        assert np.max(np.abs(f - np.array(r["forces"]))) < 1e-5  # Ha/Bohr
        assert np.allclose(f.sum(0), 0.0, atol=1e-12)
    if s.get("stress"):
        st = np.asarray(derivatives.stress(res))
        assert np.max(np.abs(st - np.array(r["stress"]) * 29421.015697)) < 0.01  # GPa
    return res


@pytest.mark.parametrize("name", FAST)
def test_matches_abinit(name):
    res = _check(name)
    # iteration caps of the issue: Si ≤ 12, Al with smearing ≤ 25
    assert res.n_iter <= (25 if REFS[name]["settings"]["smearing"] else 12)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_matches_abinit_slow(name):
    _check(name)
