"""The `difcrys` command: JSON contracts of `info` and `scf`, DFT relaxation, clear errors."""

import json

import numpy as np
import pytest
from ase.neighborlist import neighbor_list

from difcrys import io
from difcrys.cli import main


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_info_json_contract(capsys):
    out = _json(capsys, ["info", "Si", "--cutoff", "4.0", "--json"])
    keys = {"formula", "n_atoms", "lattice_parameters", "volume", "density", "spacegroup_number",
            "spacegroup_symbol", "crystal_system", "bravais_lattice", "n_pairs"}
    assert keys <= set(out)
    assert (out["spacegroup_number"], out["crystal_system"], out["bravais_lattice"]) == (227, "cubic", "cF")
    atoms = io.to_ase(io.example("Si"))
    i, _ = neighbor_list("ij", atoms, 4.0)
    assert out["n_pairs"] == len(i) // 2
    assert out["volume"] == pytest.approx(atoms.get_volume())
    assert out["density"] == pytest.approx(2.329, abs=0.01)  # handbook density of Si [g/cm^3]


def test_scf_json_contract_with_forces_and_stress(capsys, tmp_path):
    out = _json(capsys, ["scf", "Si", "--ecut", "5", "--kpts", "2", "2", "2", "--json", "--quiet", "--forces",
                         "--stress", "--out", str(tmp_path)])
    for k in ("energy_ha", "energy_ev", "energy_terms_ha", "fermi_level_ha", "eigenvalues_ha", "kpoints_frac",
              "gap_ev", "n_iter", "converged", "wall_time_s", "forces_ev_per_ang", "stress_gpa"):
        assert k in out, k
    assert set(out["energy_terms_ha"]) == {"kinetic", "hartree", "xc", "ewald", "local", "nonlocal", "psp_core",
                                           "entropy"}
    assert out["converged"]
    assert sum(out["energy_terms_ha"].values()) == pytest.approx(out["energy_ha"], abs=1e-10)
    assert out["energy_ev"] == pytest.approx(out["energy_ha"] * 27.211386245988)
    assert np.allclose(np.sum(out["forces_ev_per_ang"], 0), 0, atol=1e-10)
    s = np.asarray(out["stress_gpa"])
    assert np.allclose(s, s.T) and np.allclose(s, s[0, 0] * np.eye(3), atol=1e-6)  # cubic
    assert json.loads((tmp_path / "results.json").read_text())["energy_ha"] == out["energy_ha"]


def test_bad_input_exits_with_message(capsys):
    assert main(["scf", "Si", "--ecut", "-1"]) == 2
    assert "ecut" in capsys.readouterr().err
    assert main(["scf", "Al", "--ecut", "5"]) == 2  # 3 electrons, no smearing
    assert "odd number" in capsys.readouterr().err
    assert main(["info", "no_such_file.cif"]) == 2
    assert "not found" in capsys.readouterr().err


def test_dft_relaxation_returns_ideal_positions():
    """A displaced Si2 relaxed at fixed cell: the two atoms end a quarter body diagonal apart (forces → 0)."""
    from difcrys.crystal import Crystal
    from difcrys.dft.calculator import relax

    si = io.example("Si")
    frac = np.asarray(si.frac) + np.array([[0.0, 0.0, 0.0], [0.02, -0.015, 0.01]])
    start = Crystal.create(np.asarray(si.numbers), frac, np.asarray(si.lattice))
    relaxed, info = relax(start, ecut=5.0, kpts=(2, 2, 2), cell=False, fmax=1e-3)
    d = np.asarray(relaxed.frac[1] - relaxed.frac[0])
    assert np.allclose(d - np.round(d - 0.25), 0.25, atol=2e-4)
    assert info["max_force_ev_per_ang"] < 1e-3
