"""ABINIT interop: psp10 writer/reader, input writer, output parsers, and the reference data.

Most tests need no ABINIT: they use the saved outputs in tests/data
(``abinit_<system>.abo`` and ``abinit_refs.json``, made by
tests/data/make_abinit_refs.py with ABINIT 9.6.2). Tests that run ABINIT skip
when the binary is absent.
"""

import json
import pathlib
import re
import shutil

import numpy as np
import pytest

from difcrys.dft import abinit as ab
from difcrys.dft import gth_table as gt
from difcrys.errors import ConfigError, FileFormatError, StructureError
from difcrys.units import BOHR_ANG

DATA = pathlib.Path(__file__).resolve().parent / "data"
REFS = json.loads((DATA / "abinit_refs.json").read_text())
SYSTEMS = REFS["systems"]
HAVE_ABINIT = ab.find_abinit() is not None
needs_abinit = pytest.mark.skipif(not HAVE_ABINIT, reason="abinit executable not installed (apt-get install abinit)")


def _nelect(settings):
    return sum(gt.load_gth(int(z), settings["psp"][gt.SYMBOLS[int(z)]].split("-", 1)[1]).zion
               for z in settings["numbers"])


# ---------------------------------------------------------------- psp files
def test_psp10_round_trip_every_entry():
    for key in gt._table()["entries"]:
        p = gt.load_gth(key)
        d = ab.read_psp10(ab.write_psp10(p))
        assert d["pspcod"] == 10 and d["pspxc"] == 1
        assert d["Z"] == p.Z and d["zion"] == p.zion and d["rloc"] == p.rloc
        np.testing.assert_array_equal(d["c"], p.c)
        np.testing.assert_array_equal(d["nproj"][: d["lmax"] + 1], p.nproj[: d["lmax"] + 1])
        assert d["lmax"] == max(p.lmax, 0)
        np.testing.assert_array_equal(d["h"], p.h)  # bit-exact: 17-digit output
        np.testing.assert_array_equal(d["r"][p.nproj > 0], p.r[p.nproj > 0])
        assert not d["k"].any()


def test_read_abinit_authored_psp10_file():
    """ABINIT ships a pspcod-10 Si file written by its developers: same numbers as our table."""
    f = pathlib.Path("/usr/share/abinit/psp/14Si_pade-q4")
    if not f.exists():
        pytest.skip("ABINIT data files (abinit-data) not installed")
    d = ab.read_psp10(f.read_text())
    p = gt.load_gth("Si")
    assert d["rloc"] == p.rloc
    np.testing.assert_allclose(d["c"], p.c, atol=1e-8)
    np.testing.assert_allclose(d["h"], p.h, atol=1e-8)
    np.testing.assert_allclose(d["r"][:2], p.r[:2], atol=1e-8)
    assert d["k"][1, 0, 0] == pytest.approx(0.00037280)  # spin-orbit k read from its own line


def test_epsatm_matches_abinit():
    # ABINIT prints "pspatm : epsatm=   -4.97652542" for GTH-PADE Si
    t = ab.parse_output((DATA / "abinit_si2_ecut8_k222.abo").read_text())
    assert ab.epsatm(gt.load_gth("Si")) == pytest.approx(t["epsatm"][0], abs=1e-8)
    for name, s in SYSTEMS.items():
        for sym, e in s["results"]["epsatm"].items():
            assert s["results"]["epsatm_exact"][sym] == pytest.approx(e, abs=6e-9), name


def test_read_psp10_errors():
    with pytest.raises(FileFormatError):
        ab.read_psp10("title\n14 4 0\n3 1 1 0 2001 0\n0.44 -7.3 0 0 0\n")  # pspcod 3
    with pytest.raises(FileFormatError):
        ab.read_psp10("title\n14 4 0\n10 1 1 0 2001 0\n0.44 1 -7.3\n2\n0.42 2 5.9\n")  # truncated
    with pytest.raises(FileFormatError, match="nnonloc"):
        ab.read_psp10("title\n14 4 0\n10 1 1 0 2001 0\n0.44 1 -7.3\n3\n")


# ---------------------------------------------------------------- input files
def test_write_input_contents():
    s = SYSTEMS["graphene_fd"]["settings"]
    # regenerating the stored reference input from its recorded settings gives the same text
    inp = ab.write_input(s["lattice_bohr"], s["numbers"], s["frac"], s["ecut"], s["kgrid"], s["shift"],
                         s["ngfft"], s["nband"], ("fermi-dirac", 0.01), s["ixc"], ["06-C-q4.psp10"],
                         forces=True, stress=True, nstep=s["nstep"], tolvrs=s["tolvrs"])
    assert inp == SYSTEMS["graphene_fd"]["abinit_input"]
    rprim = re.search(r"rprim (.*?)\nnatom", inp, re.S).group(1).split()
    np.testing.assert_array_equal(np.array(rprim, float).reshape(3, 3), s["lattice_bohr"])
    assert "occopt 3 tsmear 0.01" in inp and "ngfft 15 15 45" in inp and "istwfk *1" in inp
    assert "ecutsm 0.0" in inp and "optstress 1" in inp and 'pseudos "06-C-q4.psp10"' in inp
    assert "chkprim 0" in inp and "kptopt 1 ngkpt 6 6 1 nshiftk 1 shiftk 0.0 0.0 0.0" in inp
    inp = ab.write_input(np.eye(3) * 8, [8, 1, 1], [[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0]], 10, (1, 1, 1),
                         smearing={"occopt": 7, "tsmear": 0.005}, ixc=-1012, tolvrs=1e-18)
    assert "znucl 8 1" in inp and "typat 1 2 2" in inp and "ixc -1012" in inp
    assert "occopt 7 tsmear 0.005" in inp and "tolvrs 1.000e-18" in inp and "toldfe" not in inp


def test_write_input_errors():
    good = dict(lattice_bohr=np.eye(3) * 8, numbers=[14], frac=[[0, 0, 0]], ecut=8, kgrid=(2, 2, 2))
    left = np.diag([8.0, 8.0, -8.0])
    with pytest.raises(StructureError, match="right-handed"):
        ab.write_input(**dict(good, lattice_bohr=left))
    with pytest.raises(StructureError, match="NaN"):
        ab.write_input(**dict(good, frac=[[np.nan, 0, 0]]))
    with pytest.raises(StructureError, match="frac"):
        ab.write_input(**dict(good, frac=[[0, 0, 0], [0.5, 0.5, 0.5]]))
    with pytest.raises(ConfigError, match="unknown smearing"):
        ab.write_input(**good, smearing=("tetrahedron", 0.01))
    with pytest.raises(ConfigError, match="tsmear"):
        ab.write_input(**good, smearing=("cold", -0.01))
    with pytest.raises(ConfigError, match="kgrid"):
        ab.write_input(**dict(good, kgrid=(2, 0, 2)))
    with pytest.raises(ConfigError, match="ecut"):
        ab.write_input(**dict(good, ecut=0))
    with pytest.raises(ConfigError, match="psp files"):
        ab.write_input(**good, psp_files=["a", "b"])
    with pytest.raises(ConfigError, match="not found"):
        ab.run_abinit(np.eye(3) * 8, [14], [[0, 0, 0]], 8, (1, 1, 1), executable="/nonexistent/abinit")


# ---------------------------------------------------------------- output parsing
@pytest.mark.parametrize("name", ["si2_ecut8_k222", "si8_displaced_k111"])
def test_parse_text_output_matches_gsr_values(name):
    """The text parser agrees with the full-precision netCDF values of the same run."""
    t = ab.parse_output((DATA / f"abinit_{name}.abo").read_text())
    r = SYSTEMS[name]["results"]
    assert t["abinit_version"] == REFS["abinit_version"].split()[-1] == "9.6.2"
    assert t["converged"] and t["nstep_scf"] == r["nstep_scf"]
    assert t["ngfft"] == r["ngfft"] == SYSTEMS[name]["settings"]["ngfft"]
    assert t["nsym"] == r["nsym"] and t["space_group"] == r["space_group"]
    for k, v in t["energies"].items():
        assert v == pytest.approx(r["energies"][k], abs=1e-12), k
    assert set(t["energies"]) >= {"Kinetic energy", "Hartree energy", "XC energy", "Ewald energy",
                                  "PspCore energy", "Loc. psp. energy", "NL   psp  energy", "Etotal"}
    np.testing.assert_allclose(t["forces"], r["forces"], atol=1e-13)
    np.testing.assert_allclose(t["force_avg"], r["force_avg"], atol=1e-10)
    np.testing.assert_allclose(t["stress"], r["stress"], atol=1e-12)
    np.testing.assert_allclose(t["kpoints"], r["kpoints"], atol=1e-12)
    np.testing.assert_allclose(t["kpoint_weights"], r["kpoint_weights"], atol=1e-5)
    np.testing.assert_allclose(t["eigenvalues_first_k"], r["eigenvalues"][0][0], atol=6e-6)
    assert t["fermie"] == pytest.approx(r["fermie"], abs=1e-9)
    assert t["ucvol"] == pytest.approx(abs(np.linalg.det(SYSTEMS[name]["settings"]["lattice_bohr"])), rel=1e-7)


def test_parse_output_errors(tmp_path):
    with pytest.raises(FileFormatError, match="not an ABINIT output"):
        ab.parse_output("hello\nworld\n")
    with pytest.raises(FileFormatError, match="not found"):
        ab.read_gsr(tmp_path / "missing_GSR.nc")
    (tmp_path / "bad_GSR.nc").write_text("not netcdf")
    with pytest.raises(FileFormatError):
        ab.read_gsr(tmp_path / "bad_GSR.nc")


# ---------------------------------------------------------------- reference data
def test_refs_schema_and_convergence():
    assert REFS["schema_version"] == 1
    assert REFS["gth_table_sha256"]
    import hashlib

    for key, p in REFS["psp"].items():
        assert hashlib.sha256(p["text"].encode()).hexdigest() == p["sha256"]
        d = ab.read_psp10(p["text"])
        q = gt.load_gth(key)
        np.testing.assert_array_equal(d["h"], q.h)  # the refs used today's table
        assert d["rloc"] == q.rloc
    for name, s in SYSTEMS.items():
        r = s["results"]
        assert r["converged"] and abs(r["deltae"]) < 1e-12 and r["res2"] < 1e-19, name
        assert r["ngfft"] == s["settings"]["ngfft"], name
        assert sum(r["kpoint_weights"]) == pytest.approx(1.0, abs=1e-12)
        eig = np.asarray(r["eigenvalues"])
        assert eig.shape == (1, len(r["kpoints"]), s["settings"]["nband"])
        assert np.all(np.diff(eig, axis=-1) >= -1e-12)
        # occupations integrate to the electron count
        occ = np.asarray(r["occupations"])
        assert np.einsum("k,skn->", np.asarray(r["kpoint_weights"]), occ) == pytest.approx(
            _nelect(s["settings"]), abs=1e-9)
        # the energy terms add up to Etotal
        e = r["energies"]
        parts = ["Kinetic energy", "Hartree energy", "XC energy", "Ewald energy", "PspCore energy",
                 "Loc. psp. energy", "NL   psp  energy", "-kT*entropy"]
        assert sum(e[k] for k in parts) == pytest.approx(e["Etotal"], abs=1e-10), name
        assert e["Etotal"] == r["etotal"]
        if s["settings"]["smearing"] is None:
            assert e["-kT*entropy"] == 0.0
        else:
            assert e["-kT*entropy"] != 0.0


def test_refs_psp_core_convention():
    """PspCore energy = N_el * sum_atoms epsatm_a / Omega (ABINIT)."""
    for name, s in SYSTEMS.items():
        st, r = s["settings"], s["results"]
        omega = abs(np.linalg.det(st["lattice_bohr"]))
        eps = sum(r["epsatm_exact"][gt.SYMBOLS[int(z)]] for z in st["numbers"])
        assert r["energies"]["PspCore energy"] == pytest.approx(_nelect(st) * eps / omega, rel=1e-12, abs=1e-13)


def test_refs_ewald_energy_against_pymatgen():
    """ABINIT's Ewald energy (point ions of charge zion + uniform background) = pymatgen's Ewald sum."""
    from pymatgen.analysis.ewald import EwaldSummation
    from pymatgen.core import Lattice, Structure

    for name in ["si2_ecut8_k222", "c2_diamond_ecut15_k444", "al_cold", "si8_displaced_k111", "graphene_fd"]:
        st, r = SYSTEMS[name]["settings"], SYSTEMS[name]["results"]
        s = Structure(Lattice(np.asarray(st["lattice_bohr"]) * BOHR_ANG), st["numbers"], st["frac"])
        s.add_oxidation_state_by_site([gt.load_gth(int(z)).zion for z in st["numbers"]])
        e_ha = EwaldSummation(s, acc_factor=16).total_energy / EwaldSummation.CONV_FACT * BOHR_ANG
        assert e_ha == pytest.approx(r["energies"]["Ewald energy"], abs=1e-11), name


@pytest.mark.parametrize("name", ["si2_ecut8_k444", "al_cold", "graphene_fd", "c2_diamond_ecut15_k444",
                                  "si8_displaced_k222"])
def test_refs_irreducible_kpoints_against_spglib(name):
    """ABINIT's irreducible k-points carry the same weights as spglib's irreducible mesh."""
    import spglib

    st, r = SYSTEMS[name]["settings"], SYSTEMS[name]["results"]
    mesh = st["kgrid"]
    cell = (st["lattice_bohr"], st["frac"], st["numbers"])
    mapping, grid = spglib.get_ir_reciprocal_mesh(mesh, cell, is_shift=[0, 0, 0], is_time_reversal=True)
    _, counts = np.unique(mapping, return_counts=True)
    np.testing.assert_allclose(sorted(r["kpoint_weights"]), sorted(counts / counts.sum()), atol=1e-12)
    kp = np.asarray(r["kpoints"]) * mesh
    np.testing.assert_allclose(kp, np.round(kp), atol=1e-9)  # ABINIT's points lie on the Gamma-centred grid


def test_refs_forces_and_stress_conventions():
    r = SYSTEMS["si8_displaced_k222"]["results"]
    f, fraw = np.asarray(r["forces"]), np.asarray(r["forces_raw"])
    # ABINIT removes the mean force; forces_raw keep it
    np.testing.assert_allclose(f.sum(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(fraw.mean(0), r["force_avg"], atol=1e-10)
    np.testing.assert_allclose(fraw - fraw.mean(0), f, atol=1e-11)
    assert np.abs(r["force_avg"]).max() < 1e-6  # drift (egg-box) small compared with the forces
    assert np.abs(f).max() > 1e-2  # the displaced atom feels a real restoring force
    # displaced atom (index 1) pushed back against the displacement (0.01, 0.02, -0.015) * a
    disp = np.array([0.01, 0.02, -0.015]) * np.diag(SYSTEMS["si8_displaced_k222"]["settings"]["lattice_bohr"])
    assert f[1] @ disp < 0
    s = np.asarray(r["stress"])
    np.testing.assert_allclose(s, s.T, atol=1e-15)
    # symmetric systems have zero forces and isotropic stress
    r2 = SYSTEMS["si2_ecut12_k444"]["results"]
    np.testing.assert_allclose(r2["forces"], 0.0, atol=1e-12)
    s2 = np.asarray(r2["stress"])
    np.testing.assert_allclose(s2, np.eye(3) * s2[0, 0], atol=1e-12)


def test_refs_smearing_variants_differ_consistently():
    """Three smearing functions at the same width: same Ewald/PspCore, different entropy terms."""
    e = {k: SYSTEMS[k]["results"]["energies"] for k in ("al_cold", "al_fd", "al_gauss")}
    for k in e:
        assert e[k]["Ewald energy"] == e["al_cold"]["Ewald energy"]
    # Fermi-Dirac has the largest |kT S| at equal width; cold smearing the smallest
    ts = {k: abs(v["-kT*entropy"]) for k, v in e.items()}
    assert ts["al_fd"] > ts["al_gauss"] > ts["al_cold"]


# ---------------------------------------------------------------- with the ABINIT binary
@needs_abinit
def test_run_abinit_reproduces_reference():
    s = SYSTEMS["si2_ecut8_k222"]
    st, ref = s["settings"], s["results"]
    res = ab.run_abinit(st["lattice_bohr"], st["numbers"], st["frac"], st["ecut"], st["kgrid"], st["shift"],
                        st["ngfft"], st["nband"], forces=True, stress=True, tolvrs=st["tolvrs"],
                        nstep=st["nstep"], diemac=st["diemac"])
    assert res["input"] == s["abinit_input"]
    assert res["psp_files"]["Si"]["sha256"] == REFS["psp"]["Si-q4"]["sha256"]
    assert res["etotal"] == pytest.approx(ref["etotal"], abs=1e-10)
    np.testing.assert_allclose(res["eigenvalues"], ref["eigenvalues"], atol=1e-9)
    np.testing.assert_allclose(res["stress"], ref["stress"], atol=1e-10)
    assert res["kpoints"] == ref["kpoints"] and res["npw"] == ref["npw"]
    assert res["wall_time_s"] > 0


@needs_abinit
@pytest.mark.parametrize("key", ["H-q1", "B-q3", "Ga-q13", "Cu-q11", "La-q11"])
def test_abinit_reads_our_psp_files(key, tmp_path):
    """ABINIT echoes the h matrices it read: they equal the table (l up to 3, full matrices)."""
    import subprocess

    p = gt.load_gth(key)
    ab.write_psp10(p, tmp_path / "x.psp")
    inp = ab.write_input(np.eye(3) * 8, [p.Z], [[0, 0, 0]], 2, (1, 1, 1), nband=int(p.zion) // 2 + 2,
                         smearing=("fd", 0.05), psp_files=["x.psp"], nstep=1)
    (tmp_path / "x.abi").write_text(inp)
    subprocess.run([ab.find_abinit(), "x.abi"], cwd=tmp_path, capture_output=True, timeout=120)
    text = (tmp_path / "x.abo").read_text()
    blocks = re.findall(r"for angular momentum l =\s*(\d) r\(l\) =\s*(\S+)\s*\n\s*h11, h12, h13 =\s*(\S+)\s+(\S+)"
                        r"\s+(\S+)\s*\n\s*h22, h23 =\s*(\S+)\s+(\S+)\s*\n\s*h33 =\s*(\S+)", text)
    assert len(blocks) == max(p.lmax, 0) + 1
    for b in blocks:
        l = int(b[0])
        h = p.h[l]
        want = [p.r[l] if p.nproj[l] else 0.0, h[0, 0], h[0, 1], h[0, 2], h[1, 1], h[1, 2], h[2, 2]]
        np.testing.assert_allclose([float(x) for x in b[1:]], want, atol=6e-8)
    eps = float(re.search(r"epsatm=\s*(\S+)", text).group(1))
    assert eps == pytest.approx(ab.epsatm(p), abs=6e-9)


def test_angstrom_input_and_crystal_conversion():
    from difcrys.crystal import Crystal, pad

    a_ang = 10.26 * BOHR_ANG
    lat_ang = np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]) * a_ang
    frac = [[0.0, 0.0, 0.0], [0.25, 0.25, 0.25]]
    s = SYSTEMS["si2_ecut8_k222"]["settings"]
    inp_a = ab.write_input(lat_ang, [14, 14], frac, 8, (2, 2, 2), length_unit="angstrom")
    inp_b = ab.write_input(s["lattice_bohr"], [14, 14], frac, 8, (2, 2, 2))
    rp = lambda t: np.array(re.search(r"rprim (.*?)\nnatom", t, re.S).group(1).split(), float)  # noqa: E731
    np.testing.assert_allclose(rp(inp_a), rp(inp_b), rtol=1e-14)
    cr = pad(Crystal.create(["Si", "Si"], frac, lat_ang), 3)  # one padding atom
    lat, num, fr = ab.crystal_to_bohr(cr)
    np.testing.assert_allclose(lat, s["lattice_bohr"], rtol=1e-12)
    assert num.tolist() == [14, 14] and fr.shape == (2, 3)
    with pytest.raises(ConfigError, match="length_unit"):
        ab.write_input(lat_ang, [14, 14], frac, 8, (2, 2, 2), length_unit="nm")
