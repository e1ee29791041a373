"""Tests of difcrys.data: readers of every shared data set, Dataset, BucketLoader.

The counts are those of ``../shared/data/README.md`` and of the folders' own
READMEs; unit and sign checks use physics that would fail with a wrong unit or
convention (work theorem for stresses, elastic constants, bond lengths, band
width, isolated-atom energies, symmetry against spglib and pymatgen).
"""

from __future__ import annotations

import functools
import json
import os
import re
import warnings
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import DATA_DIR, ROOT, require_data
from difcrys.crystal import Crystal, batch
from difcrys.data import (BucketLoader, Dataset, DatasetError, SHEAR_ORDER, choose_buckets, cif_to_crystal,
                          load_shared, parse_p1_cif, read_cif_csv, read_deepmd, read_extxyz,
                          read_hamiltonian_h5, read_jarvis_supercon, read_mlearn_json, read_xrd_dat,
                          read_xrd_npz, shared_data_dir, virial_stress_to_gpa)
from difcrys.errors import ConfigError, DifcrysError, FileFormatError, StructureError
from difcrys.units import EV_PER_ANG3_GPA


@functools.lru_cache(maxsize=None)
def shared(name, part=None):
    """Each shared file is read once per test session."""
    require_data(name)
    return load_shared(name, part)


def cart(c: Crystal) -> np.ndarray:
    return np.asarray(c.frac) @ np.asarray(c.lattice)


# ============================================================ locating data
def test_shared_data_dir_env_and_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFCRYS_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path.resolve()
    monkeypatch.setenv("DIFCRYS_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileFormatError, match="shared data folder not found"):
        shared_data_dir()
    monkeypatch.delenv("DIFCRYS_DATA")
    default = (ROOT.parent / "shared" / "data").resolve()
    if default.is_dir():
        assert shared_data_dir() == default
    else:
        with pytest.raises(FileFormatError, match="DIFCRYS_DATA"):
            shared_data_dir()


def test_load_shared_unknown_names():
    require_data()
    with pytest.raises(FileFormatError, match="unknown shared data set"):
        load_shared("no_such_set")
    with pytest.raises(FileFormatError, match="choose part"):
        load_shared("perov_5", "training")


# ========================================================= CSV (CIF) sets
CSV_COUNTS = [
    ("perov_5", "train_subset_dev", 1024),
    ("perov_5", "val", 3787),
    ("perov_5", "test", 3785),
    ("carbon_24", "val", 2032),
    ("carbon_24", "test", 2030),
    ("mp_20_xrd_subset", "test_subset", 1130),
    ("jarvis_supercon", "train", 846),
    ("jarvis_supercon", "val", 105),
    ("jarvis_supercon", "test", 105),
]


@pytest.mark.parametrize("name,part,rows", CSV_COUNTS)
def test_csv_row_counts_and_cell_volumes(name, part, rows):
    """Every row parses; the lattice built from a, b, c, α, β, γ reproduces the CIF's own
    ``_cell_volume`` (an independent field) and the atom count its ``_chemical_formula_sum``."""
    import pandas as pd

    ds = shared(name, part)
    assert len(ds) == rows
    df = pd.read_csv(require_data(name, f"{part}.csv"))
    vol_cif = np.array([float(re.search(r"_cell_volume\s+([\d.]+)", t).group(1)) for t in df["cif"]])
    vol = np.array([np.linalg.det(np.asarray(c.lattice)) for c in ds.crystals])
    np.testing.assert_allclose(vol, vol_cif, rtol=2e-6)
    for text, c in zip(df["cif"][:200], ds.crystals[:200]):
        formula = re.search(r"_chemical_formula_sum\s+'?([^'\n]+)'?", text).group(1)
        comp = Counter()
        for sym, num in re.findall(r"([A-Z][a-z]?)(\d*)", formula):
            comp[sym] += int(num or 1)
        assert Counter(c.symbols) == comp


@pytest.mark.parametrize("name,part", [("perov_5", "test"), ("carbon_24", "test"), ("mp_20_xrd_subset", "test_subset"),
                                       ("jarvis_supercon", "train")])
def test_fast_cif_parser_matches_pymatgen(name, part):
    """The fast P1 path gives the same lattice parameters, species and (wrapped) fractional
    coordinates as pymatgen's CIF parser, on every 97th row."""
    import pandas as pd
    from pymatgen.core import Structure

    df = pd.read_csv(require_data(name, f"{part}.csv"))
    for text in df["cif"][::97]:
        assert parse_p1_cif(text) is not None
        c = cif_to_crystal(text)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Structure.from_str(text, fmt="cif")
        np.testing.assert_allclose(np.asarray(c.lattice_parameters()),
                                   list(s.lattice.abc) + list(s.lattice.angles), rtol=1e-7, atol=1e-6)
        # pymatgen may reorder the sites (file order is kept here): match them as sets
        mine = sorted(zip(c.symbols, np.round(np.asarray(c.frac) % 1.0, 6).tolist()))
        ref = sorted(zip([site.specie.symbol for site in s], np.round(s.frac_coords % 1.0, 6).tolist()))
        assert [m[0] for m in mine] == [r[0] for r in ref]
        d = np.array([m[1] for m in mine]) - np.array([r[1] for r in ref])
        # pymatgen snaps values within ~1e-5 of simple fractions (0.3333 → 1/3); the file value is kept here
        np.testing.assert_allclose(d - np.round(d), 0, atol=1e-4)
        np.testing.assert_allclose(abs(np.linalg.det(np.asarray(c.lattice))), s.volume, rtol=1e-8)


def test_perov5_content_matches_readme():
    """README: ABX3 cubic perovskites, 5 atoms, 56 elements; heat_ref in eV/atom."""
    parts = [shared("perov_5", p) for p in ("train_subset_dev", "val", "test")]
    elements = set()
    for ds in parts:
        assert np.all(ds.n_atoms == 5)
        L = np.stack([np.asarray(c.lattice) for c in ds.crystals])
        G = L @ np.swapaxes(L, 1, 2)  # metric: a² on the diagonal, 0 off-diagonal for a cube
        np.testing.assert_allclose(G, G[:, :1, :1] * np.eye(3), atol=1e-9 * G.max())
        elements |= set(ds.species_counts())
        assert ds.units["heat_ref"] == "eV/atom"
        # heats of formation of oxides/nitrides are a few eV/atom at most
        assert np.all(np.abs(ds.properties["heat_ref"]) < 10)
    assert len(elements) == 56
    ds = parts[2]
    # the 'formula' column is an independent record of the composition
    from pymatgen.core import Composition

    for c, f in zip(ds.crystals[:300], ds.metadata["formula"][:300]):
        assert Counter(c.symbols) == Counter({str(k): int(v) for k, v in Composition(f).items()})


def test_carbon24_is_carbon_with_physical_densities():
    """All carbon, 6–24 atoms; densities between graphite-like (2.2) and diamond (3.5) g/cm³
    (a wrong length unit would move them by orders of magnitude)."""
    for part in ("val", "test"):
        ds = shared("carbon_24", part)
        assert set(ds.species_counts()) == {6}
        assert ds.n_atoms.min() >= 6 and ds.n_atoms.max() <= 24
        dens = np.array([c.density() for c in ds.crystals])
        assert 2.0 < dens.min() and dens.max() < 3.8, (dens.min(), dens.max())
        assert 3.0 < np.median(dens) < 3.6


def test_mp20_spacegroups_match_spglib():
    """The MP ``spacegroup.number`` column is reproduced by spglib on the parsed crystals
    (a swapped coordinate column or a wrong lattice orientation would break the symmetry)."""
    import spglib

    ds = shared("mp_20_xrd_subset", "test_subset")
    assert len(ds.species_counts()) == 84
    assert ds.n_atoms.min() >= 1 and ds.n_atoms.max() <= 20
    idx = np.arange(0, len(ds), 7)
    ok = 0
    for i in idx:
        c = ds.crystals[i]
        d = spglib.get_symmetry_dataset((np.asarray(c.lattice), np.asarray(c.frac), np.asarray(c.numbers)),
                                        symprec=0.1)
        ok += d is not None and d.number == ds.properties["spacegroup.number"][i]
    assert ok >= 0.97 * len(idx), (ok, len(idx))


def test_mp20_xrd_npz_aligned_with_csv():
    ds = shared("mp_20_xrd_subset", "test_subset")
    x = read_xrd_npz(require_data("mp_20_xrd_subset", "test_subset_xrd.npz"))
    assert x["xrd"].shape == (1130, 512)
    assert x["material_id"] == ds.ids
    assert x["two_theta"][0] > 0 and x["two_theta"][-1] < 180
    assert np.all(x["xrd"] >= 0) and np.all(x["xrd"].max(axis=1) > 0)


def test_jarvis_tc_sign():
    """``prop`` is −Tc [K]; ``tc_k`` is ≥ 0 and within the range of phonon-mediated
    superconductors (< 40 K, McMillan-type limit)."""
    for part in ("train", "val", "test"):
        ds = shared("jarvis_supercon", part)
        np.testing.assert_array_equal(ds.properties["tc_k"], -ds.properties["prop"])
        assert np.all(ds.properties["tc_k"] >= 0)
        assert ds.properties["tc_k"].max() < 40
        assert ds.units["tc_k"] == "K"


def test_measured_xrd_dat():
    tt, y = read_xrd_dat(require_data("xrd_measured", "mattergen_TaCr2O6", "xrd_measurement_TaCr2O6.dat"))
    assert tt[0] == pytest.approx(5.0) and tt[-1] == pytest.approx(90.0)
    np.testing.assert_allclose(np.diff(tt), 0.02, atol=1e-9)
    assert len(y) == 4251 and np.all(y > 0)


# =============================================================== mlearn
MLEARN_COUNTS = {"Cu": (262, 31), "Ge": (228, 25), "Li": (241, 29), "Mo": (194, 23), "Ni": (263, 31),
                 "Si": (214, 25)}
# PBE (VASP) energies per atom of the ground-state crystals, Materials Project
# (mp-30 Cu, mp-32 Ge, mp-135 Li, mp-129 Mo, mp-23 Ni, mp-149 Si). Ge differs by
# ~0.13 eV/atom because mlearn used the Ge PAW without 3d semicore states.
PBE_E_PER_ATOM = {"Cu": -4.10, "Ge": -4.62, "Li": -1.91, "Mo": -10.85, "Ni": -5.78, "Si": -5.42}


@pytest.mark.parametrize("el", sorted(MLEARN_COUNTS))
def test_mlearn_extxyz_counts_energies_forces(el):
    for split, n in zip(("train", "test"), MLEARN_COUNTS[el]):
        ds = shared("mlearn_zuo2020", f"{el}_{split}")
        assert len(ds) == n
        assert set(ds.species_counts()) == {ds.crystals[0].numbers[0]}
        assert ds.pbc.all()
        # eV: the lowest energy per atom is the PBE ground state
        assert ds.energy_per_atom.min() == pytest.approx(PBE_E_PER_ATOM[el], abs=0.2)
        # periodic DFT forces carry no net force (translation invariance)
        net = np.array([np.abs(f.sum(axis=0)).max() for f in ds.forces])
        assert net.max() < 1e-5
        assert ds.stress is None


@pytest.mark.parametrize("el", sorted(MLEARN_COUNTS))
def test_mlearn_json_equals_extxyz(el):
    """The JSON files hold the same frames (positions, energies, forces) as the extxyz ones."""
    for js, xyz in (("training", "train"), ("test", "test")):
        if not (DATA_DIR / "mlearn_json_with_stress" / f"{el}_{js}.json").exists():
            continue  # Cu and Ni have only test files
        a = shared("mlearn_json_with_stress", f"{el}_{js}")
        b = shared("mlearn_zuo2020", f"{el}_{xyz}")
        assert len(a) == len(b) == MLEARN_COUNTS[el][0 if xyz == "train" else 1]
        np.testing.assert_allclose(a.energy, b.energy, rtol=0, atol=1e-7)
        for ca, cb, fa, fb in zip(a.crystals, b.crystals, a.forces, b.forces):
            np.testing.assert_allclose(cart(ca), cart(cb), atol=1e-5)
            np.testing.assert_allclose(fa, fb, atol=1e-7)
        assert a.stress.shape == (len(a), 3, 3)
        np.testing.assert_allclose(a.stress, np.swapaxes(a.stress, 1, 2))


def _elastic_series(ds):
    """{(n_atoms, mode): [(strain, k)]} of the 'Elastic' frames."""
    out = {}
    for k, (g, desc) in enumerate(zip(ds.metadata["group"], ds.ids)):
        m = re.search(r"mode (\d+), strain (-?[\d.]+)", desc)
        if g == "Elastic" and m:
            out.setdefault((int(ds.n_atoms[k]), int(m.group(1))), []).append((float(m.group(2)), k))
    return {key: sorted(v) for key, v in out.items()}


@pytest.mark.parametrize("el", ["Si", "Ge"])
def test_mlearn_stress_work_theorem(el):
    """Sign and units of the converted stress: along each strain path of fixed fractional
    coordinates, ΔE = ∫ V σ : dε (σ = (1/V) ∂E/∂ε), evaluated by the trapezoid rule.
    With the VASP sign or kbar left unconverted the error would be ≥ 100 %."""
    ds = shared("mlearn_json_with_stress", f"{el}_training")
    n_checked = 0
    for series in _elastic_series(ds).values():
        for (_, k1), (_, k2) in zip(series[:-1], series[1:]):
            c1, c2 = ds.crystals[k1], ds.crystals[k2]
            d = np.asarray(c1.frac) - np.asarray(c2.frac)
            if np.abs(d - np.round(d)).max() > 1e-4:
                continue
            L1, L2 = np.asarray(c1.lattice), np.asarray(c2.lattice)
            F = np.linalg.solve(L1, L2)  # L2 = L1 F
            de = 0.5 * (F + F.T) - np.eye(3)
            s1, s2 = ds.stress[k1] / EV_PER_ANG3_GPA, ds.stress[k2] / EV_PER_ANG3_GPA
            W = 0.5 * (np.linalg.det(L1) * np.sum(s1 * de) + np.linalg.det(L2) * np.sum(s2 * de))
            dE = ds.energy[k2] - ds.energy[k1]
            assert abs(dE - W) < 0.08 * abs(dE) + 2e-3, (ds.ids[k1], ds.ids[k2], dE, W)
            n_checked += 1
    assert n_checked >= 40


def test_mlearn_si_c11_in_gpa():
    """Uniaxial strain ε_xx = ±0.02 of Si: σ_xx/ε_xx = C11 ≈ 153 GPa (PBE; exp. 166 GPa)."""
    ds = shared("mlearn_json_with_stress", "Si_training")
    s = {}
    for key, series in _elastic_series(ds).items():
        if key[1] == 0:
            s = dict(series)
    L0 = [np.asarray(c.lattice) for c, i in zip(ds.crystals, ds.ids) if "Ground state" in i][0]
    eps = {e: np.linalg.solve(L0, np.asarray(ds.crystals[k].lattice))[0, 0] - 1 for e, k in s.items()}
    c11 = (ds.stress[s[0.02]][0, 0] - ds.stress[s[-0.02]][0, 0]) / (eps[0.02] - eps[-0.02])
    assert 140 < c11 < 170, c11


@pytest.mark.parametrize("el", sorted(SHEAR_ORDER))
def test_mlearn_shear_component_order(el):
    """The element-dependent shear order of ``virial_stress``: in every sheared 'Elastic' cell the
    largest shear stress lies in the plane of the shear strain (Euler–Almansi strain of the cell
    relative to the cube of equal volume) and has its sign (σ_ij = 2 C44 e_ij, C44 > 0)."""
    files = [f for f in (f"{el}_training", f"{el}_test")
             if (DATA_DIR / "mlearn_json_with_stress" / f"{f}.json").exists()]
    if not files:
        pytest.skip("no JSON file")
    checked = signs = 0
    for f in files:
        ds = shared("mlearn_json_with_stress", f)
        for k, g in enumerate(ds.metadata["group"]):
            if g != "Elastic":
                continue
            L = np.asarray(ds.crystals[k].lattice)
            F = L / np.cbrt(np.linalg.det(L))
            e = 0.5 * (np.eye(3) - np.linalg.inv(F.T @ F))
            off = np.abs(e - np.diag(np.diag(e)))
            i, j = np.unravel_index(np.argmax(off), off.shape)
            if off[i, j] < 0.005:
                continue
            s = ds.stress[k]
            soff = np.abs(s - np.diag(np.diag(s)))
            assert {i, j} == set(np.unravel_index(np.argmax(soff), soff.shape)), ds.ids[k]
            if abs(s[i, j]) > 0.5:  # Li's ±0.005 shears give noisy 0.09 GPa stresses of either sign
                assert np.sign(s[i, j]) == np.sign(e[i, j]), ds.ids[k]
                signs += 1
            checked += 1
    assert checked >= 1 and (signs >= 1 or el == "Li")


def test_virial_stress_conversion_and_errors(tmp_path):
    v = [10.0, 20.0, 30.0, 1.0, 2.0, 3.0]  # kbar, VASP pressure sign
    s = virial_stress_to_gpa(v, ("xy", "yz", "zx"))
    np.testing.assert_allclose(np.diag(s), [-1.0, -2.0, -3.0])
    np.testing.assert_allclose([s[0, 1], s[1, 0], s[1, 2], s[0, 2]], [-0.1, -0.1, -0.2, -0.3])
    s2 = virial_stress_to_gpa(v, SHEAR_ORDER["Mo"])
    np.testing.assert_allclose([s2[0, 2], s2[1, 2]], [-0.2, -0.3])
    with pytest.raises(FileFormatError, match="6 components"):
        virial_stress_to_gpa([1, 2, 3])
    # unknown element: the component order must be given explicitly
    rec = {"structure": {"lattice": {"matrix": np.eye(3).tolist()},
                         "sites": [{"species": [{"element": "Al", "occu": 1}], "abc": [0, 0, 0]}]},
           "outputs": {"energy": -3.0, "forces": [[0, 0, 0]], "virial_stress": v}, "element": "Al"}
    p = tmp_path / "al.json"
    p.write_text(json.dumps([rec]))
    with pytest.raises(ConfigError, match="shear_order"):
        read_mlearn_json(p)
    ds = read_mlearn_json(p, shear_order="vasp", min_distance=0)
    np.testing.assert_allclose(ds.stress[0], s)
    p.write_text("[]")
    with pytest.raises(DatasetError, match="empty"):
        read_mlearn_json(p)


# ================================================================ DeePMD water
def test_deepmd_water_counts_and_units():
    """400 frames of 192 atoms (64 H2O) in a 12.44 Å box; O–H bonds ≈ 0.97 Å confirm Å."""
    ds = shared("deepmd_water")
    assert len(ds) == 400
    assert np.all(ds.n_atoms == 192)
    assert ds.species_counts() == {1: 128 * 400, 8: 64 * 400}
    for c in ds.crystals[::50]:
        np.testing.assert_allclose(np.asarray(c.lattice), np.eye(3) * 12.444661, atol=1e-5)
        pos = cart(c)
        z = np.asarray(c.numbers)
        o, h = pos[z == 8], pos[z == 1]
        d = o[:, None, :] - h[None, :, :]
        f = d @ np.linalg.inv(np.asarray(c.lattice))
        d = (f - np.round(f)) @ np.asarray(c.lattice)
        r = np.linalg.norm(d, axis=-1)  # [64 O, 128 H], minimum image
        assert np.all(np.sum(r < 1.25, axis=1) == 2)  # each O has two H ...
        assert np.all(np.sum(r < 1.25, axis=0) == 1)  # ... and each H one O
        assert 0.95 < r[r < 1.25].mean() < 1.02
    # net force small compared with the forces themselves (AIMD, float32 storage)
    ratio = [np.linalg.norm(f.sum(0)) / np.linalg.norm(f) for f in ds.forces]
    assert max(ratio) < 0.05
    # total energies of the same 64-molecule system fluctuate by a few eV, not kJ/mol or Ry
    assert np.ptp(ds.energy) < 10


# ================================================================== BOTNet
# counts stated in the folders' README.md files
BOTNET_README = {
    ("botnet_acac", "train_300K"): 500,
    ("botnet_acac", "train_600K"): 500,
    ("botnet_ethanol", "train"): 1000,
    ("botnet_ethanol", "test_MD"): 1000,  # README: test.xyz, 1000 rMD17 configurations
    ("botnet_3BPA", "train_300K"): 500,
    ("botnet_3BPA", "train_mixedT"): 500,
}


def _raw_frame_count(path):
    """Frames of an XYZ file by walking the atom-count lines (independent of ASE)."""
    n, k = 0, 0
    with open(path) as fh:
        lines = fh.readlines()
    while k < len(lines) and lines[k].strip():
        k += int(lines[k]) + 2
        n += 1
    assert k == len(lines)
    return n


@pytest.mark.parametrize("folder", ["botnet_acac", "botnet_ethanol", "botnet_3BPA"])
def test_botnet_counts_units_and_labels(folder):
    root = require_data(folder)
    for f in sorted(root.glob("*.xyz")):
        part = f.stem
        ds = shared(folder, part)
        assert len(ds) == _raw_frame_count(f)
        if (folder, part) in BOTNET_README:
            assert len(ds) == BOTNET_README[(folder, part)]
        assert not ds.pbc.any()  # molecules
        if "iso" in part:
            # PBE energy of the H atom is −13.6 eV (exact nonrelativistic: −13.606 eV)
            e_h = ds.energy[[c.symbols == ["H"] for c in ds.crystals].index(True)]
            assert e_h == pytest.approx(-13.6, abs=0.1)
            for c in ds.crystals:  # no lattice in the file: cubic box of 20 Å vacuum
                np.testing.assert_allclose(np.asarray(c.lattice), np.eye(3) * 20.0)
        if ds.forces is not None:
            net = max(np.abs(f_.sum(0)).max() for f_ in ds.forces)
            assert net < 1e-5
    if folder == "botnet_ethanol":
        # README: train_eth_meth = 1000 ethanol + 300 methanol, test_eth_meth = 1000 + 145 methanol
        assert Counter(shared(folder, "train_eth_meth").metadata["config_type"]) == {"ethanol": 1000,
                                                                                      "methanol": 300}
        assert Counter(shared(folder, "test_eth_meth").metadata["config_type"])["methanol"] == 145
        # README: OH_dist is the distance between atoms 2 (O) and 8 (H)
        ds = shared(folder, "train")
        for c, d in zip(ds.crystals[:50], ds.properties["OH_dist"][:50]):
            assert c.symbols[2] == "O" and c.symbols[8] == "H"
            assert np.linalg.norm(cart(c)[2] - cart(c)[8]) == pytest.approx(d, abs=1e-4)
        dimers = shared(folder, "test_dimers")
        for c, d in zip(dimers.crystals, dimers.properties["distance"]):
            assert np.linalg.norm(cart(c)[0] - cart(c)[1]) == pytest.approx(d, abs=1e-6)


def test_botnet_dimers_need_small_min_distance():
    path = require_data("botnet_ethanol", "test_dimers.xyz")
    with pytest.raises(StructureError, match="overlapping atoms.*min_distance"):
        read_extxyz(path)


# ============================================================ Hamiltonian
@pytest.fixture(scope="module")
def si64():
    return read_hamiltonian_h5(require_data("deeptb_si64_hamiltonian"))


def test_si64_blocks_hermitian_and_normalised(si64):
    h = si64
    assert h.crystal.n_atoms == 64 and h.basis == {"Si": "1s1p"}
    assert h.pairs.min() == 0 and h.pairs.max() == 63  # 0-based
    assert h.meta["n_H_blocks"] == 9434 and h.meta["n_S_blocks"] == 5562
    key = {(int(i), int(j), tuple(R)): p for p, ((i, j), R) in enumerate(zip(h.pairs, h.shifts.tolist()))}
    partner = np.array([key[(int(j), int(i), tuple(-x for x in R))]
                        for (i, j), R in zip(h.pairs, h.shifts.tolist())])
    np.testing.assert_allclose(h.H, np.swapaxes(h.H[partner], 1, 2), atol=1e-6)
    np.testing.assert_allclose(h.S, np.swapaxes(h.S[partner], 1, 2), atol=1e-6)
    onsite = (h.pairs[:, 0] == h.pairs[:, 1]) & np.all(h.shifts == 0, axis=1)
    assert onsite.sum() == 64
    np.testing.assert_allclose(h.S[onsite], np.broadcast_to(np.eye(4), (64, 4, 4)), atol=1e-6)
    S = h.blocks("S")
    np.testing.assert_array_equal(S[(3, 3, (0, 0, 0))], h.S[key[(3, 3, (0, 0, 0))]])


def test_si64_geometry_orbital_order_and_ev_units(si64):
    h = si64
    d = h.bond_vectors()
    r = np.linalg.norm(d, axis=1)
    has_s = np.abs(h.S).max(axis=(1, 2)) > 0
    assert r[has_s].max() < 8.0  # overlaps are short-ranged with d = τ_j + R·L − τ_i
    # nearest neighbours at 2.35 Å (diamond Si)
    nn = (r > 0.1) & (r < 2.6)
    assert 2.2 < r[nn].mean() < 2.45 and nn.sum() == 64 * 4
    # s–p hopping ∝ direction cosines in the order (y, z, x)
    u = d[nn] / r[nn, None]
    sp = h.H[nn, 0, 1:]
    for col, axis in zip(range(3), (1, 2, 0)):
        assert np.corrcoef(u[:, axis], sp[:, col])[0, 1] > 0.99
    # Γ-point bands: valence band (128 of 256 bands) ≈ 12 eV wide, as for Si
    import scipy.linalg

    e = scipy.linalg.eigh(h.bloch([0, 0, 0], "H"), h.bloch([0, 0, 0], "S"), eigvals_only=True)
    width, gap = e[127] - e[0], e[128] - e[127]
    assert 10.0 < width < 14.0, width
    assert 0.0 < gap < 3.0, gap
    assert h.kpoints.shape == (36, 3)


def test_hamiltonian_missing_and_malformed(tmp_path):
    with pytest.raises(FileFormatError, match="not found"):
        read_hamiltonian_h5(tmp_path / "absent")
    with pytest.raises(FileFormatError, match="no hamiltonians.h5"):
        read_hamiltonian_h5(tmp_path)


# ================================================================ Dataset
def _toy(n=6, forces=True):
    rng = np.random.default_rng(0)
    crystals, F = [], []
    for k in range(n):
        m = 1 + k % 4
        c = Crystal(numbers=np.full(m, 14, np.int32), frac=rng.uniform(size=(m, 3)) * 0.2 + np.arange(m)[:, None] / m,
                    lattice=np.eye(3) * 5.0, mask=np.ones(m, bool))
        crystals.append(c)
        F.append(rng.normal(size=(m, 3)))
    return Dataset(crystals, energy=rng.normal(size=n), forces=F if forces else None,
                   properties={"p": np.arange(n, dtype=float)}, name="toy")


def test_dataset_errors():
    with pytest.raises(DatasetError, match="empty dataset"):
        Dataset([])
    good = _toy()
    with pytest.raises(DatasetError, match=r"frame 2 .*'energy'"):
        e = good.energy.copy()
        e[2] = np.nan
        Dataset(good.crystals, energy=e)
    with pytest.raises(DatasetError, match=r"frame 1 .*forces have shape \(3, 3\).*2 atoms"):
        F = list(good.forces)
        F[1] = np.zeros((3, 3))
        Dataset(good.crystals, forces=F)
    with pytest.raises(DatasetError, match=r"frame 3 .*'forces'"):
        F = [f.copy() for f in good.forces]
        F[3][0, 1] = np.inf
        Dataset(good.crystals, forces=F)
    with pytest.raises(DatasetError, match=r"'properties\['p'\]' has 2 entries for 6"):
        Dataset(good.crystals, properties={"p": [1.0, 2.0]})
    with pytest.raises(DatasetError, match=r"frame 4 .*'q'"):
        Dataset(good.crystals, properties={"q": [0, 1, 2, 3, np.nan, 5]})
    with pytest.raises(DatasetError, match="not numeric"):
        Dataset(good.crystals, properties={"s": ["a"] * 6})
    with pytest.raises(DatasetError, match="split fractions"):
        good.split([0.8, 0.5])
    with pytest.raises(DatasetError, match="empty"):
        good.subset([])


def test_dataset_split_subset_species():
    ds = shared("carbon_24", "test")
    a, b, c = ds.split([0.8, 0.1, 0.1], seed=3)
    assert len(a) + len(b) + len(c) == len(ds)
    ids = a.ids + b.ids + c.ids
    assert sorted(ids) == sorted(ds.ids)  # disjoint and complete
    a2, _, _ = ds.split([0.8, 0.1, 0.1], seed=3)
    assert a2.ids == a.ids
    assert ds.split([0.8, 0.1, 0.1], seed=4)[0].ids != a.ids
    sub = ds.subset([5, 2])
    assert sub.ids == [ds.ids[5], ds.ids[2]]
    assert sub.properties["energy_per_atom"][1] == ds.properties["energy_per_atom"][2]
    assert ds[3].id == ds.ids[3] and ds[-1].id == ds.ids[-1]
    assert len(ds[10:20]) == 10
    assert ds.species_counts() == {6: int(ds.n_atoms.sum())}
    assert ds.species_counts("structure") == {6: len(ds)}
    w = shared("mlearn_zuo2020", "Si_test")
    assert w.species_counts() == {14: int(w.n_atoms.sum())}
    joined = Dataset.concatenate([w, shared("mlearn_zuo2020", "Ge_test")])
    assert joined.species_counts() == {14: int(w.n_atoms.sum()),
                                       32: int(shared("mlearn_zuo2020", "Ge_test").n_atoms.sum())}
    with pytest.raises(DatasetError, match="missing"):
        Dataset.concatenate([w, shared("botnet_acac", "test_H_transfer")])


# ============================================================ bad files
def test_readers_missing_files(tmp_path):
    for fn in (read_cif_csv, read_extxyz, read_deepmd, read_mlearn_json, read_hamiltonian_h5,
               read_jarvis_supercon, read_xrd_npz, read_xrd_dat):
        with pytest.raises(FileFormatError, match="not found"):
            fn(tmp_path / "missing.file")


CIF_NACL = """data_NaCl
_symmetry_space_group_name_H-M   'F m -3 m'
_symmetry_Int_Tables_number   225
_cell_length_a   5.64
_cell_length_b   5.64
_cell_length_c   5.64
_cell_angle_alpha   90
_cell_angle_beta   90
_cell_angle_gamma   90
loop_
 _symmetry_equiv_pos_as_xyz
  'x, y, z'
  'x, y+1/2, z+1/2'
  'x+1/2, y, z+1/2'
  'x+1/2, y+1/2, z'
  '-x, -y, -z'
loop_
 _atom_site_type_symbol
 _atom_site_label
 _atom_site_fract_x
 _atom_site_fract_y
 _atom_site_fract_z
 _atom_site_occupancy
  Na  Na1  0.0  0.0  0.0  1
  Cl  Cl1  0.5  0.5  0.5  1
"""


def test_cif_csv_bad_inputs(tmp_path):
    import pandas as pd

    src = require_data("perov_5", "test.csv")
    df = pd.read_csv(src, nrows=5)
    # NaN label: names row and column
    bad = df.copy()
    bad.loc[3, "heat_ref"] = np.nan
    bad.to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(DatasetError, match=r"row 3 .*'heat_ref'"):
        read_cif_csv(tmp_path / "nan.csv")
    # header only
    df.iloc[:0].to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(DatasetError, match="empty"):
        read_cif_csv(tmp_path / "empty.csv")
    # no cif column
    df.drop(columns=["cif"]).to_csv(tmp_path / "nocif.csv", index=False)
    with pytest.raises(FileFormatError, match="no 'cif' column"):
        read_cif_csv(tmp_path / "nocif.csv")
    with pytest.raises(FileFormatError, match="no column 'band'"):
        read_cif_csv(src, label_columns=["band"])
    # overlapping atoms: second atom moved onto the first
    ov = df.copy()
    lines = ov.loc[1, "cif"].splitlines()
    at = [k for k, ln in enumerate(lines) if re.match(r"\s+[A-Z][a-z]?\s+\S+\s+1\s", ln)]
    first = lines[at[0]].split()
    second = lines[at[1]].split()
    lines[at[1]] = "  " + "  ".join(second[:3] + first[3:6] + ["1"])
    ov.loc[1, "cif"] = "\n".join(lines) + "\n"
    ov.to_csv(tmp_path / "overlap.csv", index=False)
    with pytest.raises(StructureError, match=r"row 1 .*overlapping atoms"):
        read_cif_csv(tmp_path / "overlap.csv")
    # labels subset and units
    ds = read_cif_csv(src, label_columns=["heat_ref"])
    assert list(ds.properties) == ["heat_ref"] and ds.units == {"heat_ref": "eV/atom"}
    # a non-P1 CIF is expanded by pymatgen: rock salt conventional cell, 8 atoms
    assert parse_p1_cif(CIF_NACL) is None
    c = cif_to_crystal(CIF_NACL)
    assert sorted(c.symbols) == ["Cl"] * 4 + ["Na"] * 4
    with pytest.raises(FileFormatError, match="disordered"):
        cif_to_crystal(CIF_NACL.replace("Cl  Cl1  0.5  0.5  0.5  1", "Cl  Cl1  0.5  0.5  0.5  0.5"))
    with pytest.raises(FileFormatError, match="empty CIF"):
        cif_to_crystal("  ")


def test_extxyz_bad_inputs_and_left_handed(tmp_path):
    def frame(lat, e="-1.0", f="0.1 0.0 0.0"):
        return ("2\n" f'Lattice="{lat}" Properties=species:S:1:pos:R:3:forces:R:3 energy={e} pbc="T T T"\n'
                f"Si 0.0 0.0 0.0 {f}\nSi 1.3 1.3 1.3 -0.1 0.0 0.0\n")

    good = "5.0 0.0 0.0 0.0 5.0 0.0 0.0 0.0 5.0"
    left = "0.0 5.0 0.0 5.0 0.0 0.0 0.0 0.0 5.0"  # det < 0
    p = tmp_path / "a.xyz"
    p.write_text(frame(good) + frame(good, e="nan"))
    with pytest.raises(DatasetError, match=r"frame 1 .*'energy'"):
        read_extxyz(p)
    p.write_text(frame(good) + frame(good, f="nan 0 0"))
    with pytest.raises(DatasetError, match=r"frame 1 .*'forces'"):
        read_extxyz(p)
    p.write_text("")
    with pytest.raises(DifcrysError):
        read_extxyz(p)
    p.write_text(frame(left))
    ds = read_extxyz(p)
    c = ds.crystals[0]
    assert np.linalg.det(np.asarray(c.lattice)) > 0
    np.testing.assert_allclose(cart(c), [[0, 0, 0], [1.3, 1.3, 1.3]], atol=1e-12)
    np.testing.assert_allclose(ds.forces[0], [[0.1, 0, 0], [-0.1, 0, 0]])


def test_deepmd_bad_inputs(tmp_path):
    src = require_data("deepmd_water", "data_0")
    sysdir = tmp_path / "sys"
    (sysdir / "set.000").mkdir(parents=True)
    for f in ("type.raw", "type_map.raw"):
        (sysdir / f).write_text((src / f).read_text())
    for f in ("box", "coord", "energy"):
        np.save(sysdir / "set.000" / f"{f}.npy", np.load(src / "set.000" / f"{f}.npy")[:3])
    force = np.load(src / "set.000" / "force.npy")[:3]
    np.save(sysdir / "set.000" / "force.npy", force[:, :-3])  # one atom short
    with pytest.raises(DatasetError, match=r"force.npy has shape \(3, 573\)"):
        read_deepmd(sysdir)
    np.save(sysdir / "set.000" / "force.npy", force)
    ds = read_deepmd(sysdir)
    assert len(ds) == 3
    box = np.load(src / "set.000" / "box.npy")[:3]
    box[2] = 0.0
    np.save(sysdir / "set.000" / "box.npy", box)
    with pytest.raises(StructureError, match=r"set.000: frame 2: singular lattice"):
        read_deepmd(sysdir)
    (sysdir / "type_map.raw").write_text("O\nXx\n")
    with pytest.raises(StructureError, match="unknown element"):
        read_deepmd(sysdir)
    (sysdir / "type_map.raw").write_text((src / "type_map.raw").read_text())
    (sysdir / "set.000" / "box.npy").unlink()
    with pytest.raises(FileFormatError, match="missing box.npy"):
        read_deepmd(sysdir)
    with pytest.raises(DatasetError, match="no DeePMD system"):
        read_deepmd(tmp_path / "sys" / "set.000")


# ================================================================= loader
def test_choose_buckets():
    assert choose_buckets([5] * 10) == (5,)
    b = choose_buckets(np.arange(1, 101), n_buckets=4, multiple=8)
    assert len(b) <= 4 and b[-1] >= 100 and all(x % 8 == 0 for x in b)
    with pytest.raises(DatasetError):
        choose_buckets([])


def test_bucket_loader_alignment_and_determinism():
    """Every structure appears once per epoch; masked sums of the padded labels equal the
    unpadded sums; the padded crystal equals difcrys.crystal.batch; same seed → same batches."""
    ds = Dataset.concatenate([shared("mlearn_zuo2020", "Si_test"), shared("mlearn_zuo2020", "Li_test")])
    loader = BucketLoader(ds, batch_size=4, n_buckets=3, seed=1, as_jax=False)
    seen = []
    for nb, b in enumerate(loader):
        real = b.index >= 0
        seen += b.index[real].tolist()
        assert b.crystal.numbers.shape[1] in loader.buckets
        if nb < 3:
            ref = batch([ds.crystals[i] for i in b.index[real]], n_max=b.crystal.numbers.shape[1])
            np.testing.assert_array_equal(b.crystal.numbers[real], np.asarray(ref.numbers))
            np.testing.assert_allclose(b.crystal.frac[real], np.asarray(ref.frac))
            np.testing.assert_array_equal(b.crystal.mask[real], np.asarray(ref.mask))
            np.testing.assert_allclose(b.crystal.lattice[real], np.asarray(ref.lattice))
        np.testing.assert_allclose(np.sum(b.energy * b.graph_mask), ds.energy[b.index[real]].sum())
        fsum = np.sum(np.abs(b.forces) * b.crystal.mask[..., None])
        assert fsum == pytest.approx(sum(np.abs(ds.forces[i]).sum() for i in b.index[real]))
        np.testing.assert_array_equal(b.n_atoms[real], ds.n_atoms[b.index[real]])
        assert np.all(b.crystal.numbers[~b.crystal.mask] == 0)
        assert np.all(np.abs(np.linalg.det(b.crystal.lattice)) > 1)  # padding structures keep a lattice
    assert sorted(seen) == list(range(len(ds)))
    assert len(list(iter(loader))) == len(loader)
    e1 = [b.index.tolist() for b in BucketLoader(ds, 4, n_buckets=3, seed=1, as_jax=False)]
    e1b = [b.index.tolist() for b in BucketLoader(ds, 4, n_buckets=3, seed=1, as_jax=False)]
    assert e1 == e1b
    two = BucketLoader(ds, 4, n_buckets=3, seed=1, as_jax=False)
    assert [b.index.tolist() for b in two] != [b.index.tolist() for b in two]  # epochs differ
    dl = BucketLoader(ds, 4, n_buckets=3, drop_last=True, as_jax=False)
    assert all(np.all(b.index >= 0) for b in dl)


def test_bucket_loader_compiles_once_per_bucket():
    ds = shared("carbon_24", "test")
    loader = BucketLoader(ds, batch_size=64, n_buckets=3, seed=0)
    traces = []

    @jax.jit
    def mean_energy(b):
        traces.append(b.crystal.numbers.shape)
        return jnp.sum(b.properties["energy_per_atom"] * b.graph_mask) / jnp.sum(b.graph_mask)

    total = 0.0
    for b in loader:
        total += float(mean_energy(b)) * int(np.sum(np.asarray(b.graph_mask)))
    assert len(traces) == len(loader.shapes) <= 3
    assert total == pytest.approx(ds.properties["energy_per_atom"].sum(), rel=1e-10)


def test_bucket_loader_errors():
    ds = _toy()
    with pytest.raises(ConfigError, match="largest bucket"):
        BucketLoader(ds, 2, buckets=(2,))
    with pytest.raises(ConfigError, match="batch_size"):
        BucketLoader(ds, 0)


def test_extxyz_and_deepmd_stress_conventions(tmp_path):
    """ASE ``stress`` (eV/Å³, σ = (1/V) ∂E/∂ε) and a ``virial`` W = −V σ [eV] both give σ in GPa;
    checked on EMT copper, whose stress is the strain derivative of its energy."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    at = bulk("Cu", "fcc", a=3.5, cubic=True)  # compressed (a0(EMT) ≈ 3.59 Å): σ < 0
    at.calc = EMT()
    e, f, s = at.get_potential_energy(), at.get_forces(), at.get_stress(voigt=False)
    # finite-difference check of the ASE convention used as reference
    h = 1e-5
    ep = at.copy()
    ep.set_cell(at.cell[:] @ (np.eye(3) + np.diag([h, 0, 0])), scale_atoms=True)
    ep.calc = EMT()
    em = at.copy()
    em.set_cell(at.cell[:] @ (np.eye(3) - np.diag([h, 0, 0])), scale_atoms=True)
    em.calc = EMT()
    assert s[0, 0] == pytest.approx((ep.get_potential_energy() - em.get_potential_energy()) / (2 * h)
                                    / at.get_volume(), rel=1e-4)
    assert s[0, 0] < 0
    a1 = at.copy()
    a1.calc = SinglePointCalculator(a1, energy=e, forces=f, stress=at.get_stress())
    write(tmp_path / "s.xyz", a1, format="extxyz")
    ds = read_extxyz(tmp_path / "s.xyz")
    np.testing.assert_allclose(ds.stress[0], s * EV_PER_ANG3_GPA, rtol=1e-6, atol=1e-9)
    a2 = at.copy()
    a2.info["virial"] = -s * at.get_volume()
    a2.calc = SinglePointCalculator(a2, energy=e, forces=f)
    write(tmp_path / "v.xyz", a2, format="extxyz")
    np.testing.assert_allclose(read_extxyz(tmp_path / "v.xyz").stress[0], s * EV_PER_ANG3_GPA, rtol=1e-6)
    # DeePMD virial.npy (W = −V σ, eV)
    d = tmp_path / "dp" / "set.000"
    d.mkdir(parents=True)
    (tmp_path / "dp" / "type.raw").write_text("0\n" * len(at))
    (tmp_path / "dp" / "type_map.raw").write_text("Cu\n")
    np.save(d / "box.npy", at.cell[:].reshape(1, 9))
    np.save(d / "coord.npy", at.positions.reshape(1, -1))
    np.save(d / "energy.npy", np.array([e]))
    np.save(d / "force.npy", f.reshape(1, -1))
    np.save(d / "virial.npy", (-s * at.get_volume()).reshape(1, 9))
    dp = read_deepmd(tmp_path / "dp")
    np.testing.assert_allclose(dp.stress[0], s * EV_PER_ANG3_GPA, rtol=1e-6)
    assert dp.energy[0] == pytest.approx(e)
