"""difcrys.io: file formats, ASE/pymatgen round trips, handedness, examples, bad input."""

import io as _io
import warnings

import numpy as np
import pytest

from conftest import require_data
from difcrys import io
from difcrys.crystal import Crystal, batch
from difcrys.errors import DifcrysError, FileFormatError, StructureError

# ------------------------------------------------------------------------------------------ helpers


def _arr(c):
    c = c.numpy()
    return np.asarray(c.numbers), np.asarray(c.frac, float), np.asarray(c.lattice, float)


def assert_same(a, b, frac_tol=1e-12, lat_tol=1e-10):
    """Exact (to round-off) equality: same atom order, fractional coordinates and lattice."""
    na, fa, la = _arr(a)
    nb, fb, lb = _arr(b)
    np.testing.assert_array_equal(na, nb)
    np.testing.assert_allclose(fa, fb, atol=frac_tol, rtol=0)
    np.testing.assert_allclose(la, lb, atol=lat_tol, rtol=0)


def assert_same_up_to_rotation(a, b, frac_tol=1e-11, metric_tol=1e-9):
    """Same atoms and fractional coordinates, same metric L L^T (a CIF stores lattice parameters only)."""
    na, fa, la = _arr(a)
    nb, fb, lb = _arr(b)
    np.testing.assert_array_equal(na, nb)
    np.testing.assert_allclose(fa, fb, atol=frac_tol, rtol=0)
    np.testing.assert_allclose(la @ la.T, lb @ lb.T, atol=metric_tol, rtol=0)


def matcher():
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(ltol=1e-4, stol=1e-4, angle_tol=1e-3, primitive_cell=False, scale=False)


def _rows(folder, name, stride):
    import pandas as pd

    df = pd.read_csv(require_data(folder, name))
    return list(df.cif.iloc[::stride])


def _pmg_parse(cif):
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CifParser.from_str(cif).parse_structures(primitive=False)[0]


def _check_round_trips(cifs, match_every):
    """CIF -> Crystal -> (CIF, ASE, pymatgen) -> Crystal for each CIF text."""
    import ase.io
    from pymatgen.core import Lattice
    from pymatgen.io.ase import AseAtomsAdaptor

    sm = matcher()
    for i, cif in enumerate(cifs):
        c = io.from_cif_string(cif)
        # the reader keeps exactly what pymatgen's own parser reads (atom order, coordinates, cell)
        ref = _pmg_parse(cif)
        np.testing.assert_array_equal(np.asarray(c.numbers), ref.atomic_numbers)
        np.testing.assert_allclose(np.asarray(c.frac), ref.frac_coords, atol=1e-12)
        np.testing.assert_allclose(Lattice(np.asarray(c.lattice)).parameters, ref.lattice.parameters, atol=1e-9)
        assert np.isclose(float(c.volume), ref.volume, rtol=1e-12)
        # lossless round trips
        assert_same(io.from_cif_string(io.to_cif_string(c)), c, frac_tol=1e-11, lat_tol=1e-9)
        assert_same(io.from_ase(io.to_ase(c)), c)
        assert_same(io.from_pymatgen(io.to_pymatgen(c)), c)
        np.testing.assert_allclose(io.to_ase(c).positions, np.asarray(c.positions), atol=1e-12)
        if i % match_every == 0:
            assert sm.fit(ref, io.to_pymatgen(io.from_cif_string(io.to_cif_string(c))))
            # an independent parser (ASE's CIF reader) reads our CIF as the same structure
            atoms = ase.io.read(_io.StringIO(io.to_cif_string(c)), format="cif")
            assert sm.fit(ref, AseAtomsAdaptor.get_structure(atoms))


# ------------------------------------------------------------------------------------------ round trips
def test_round_trips_perov5_sample():
    _check_round_trips(_rows("perov_5", "test.csv", stride=20), match_every=5)


def test_round_trips_mp20_sample():
    _check_round_trips(_rows("mp_20_xrd_subset", "test_subset.csv", stride=10), match_every=4)


@pytest.mark.slow
def test_round_trips_perov5_all():
    cifs = _rows("perov_5", "test.csv", stride=1)
    assert len(cifs) == 3785
    _check_round_trips(cifs, match_every=1)


@pytest.mark.slow
def test_round_trips_mp20_all():
    cifs = _rows("mp_20_xrd_subset", "test_subset.csv", stride=1)
    assert len(cifs) == 1130
    _check_round_trips(cifs, match_every=1)


def _some_crystals():
    cifs = _rows("mp_20_xrd_subset", "test_subset.csv", stride=150)
    return [io.example("Si"), io.example("GaAs", conventional=True), io.example("graphene")] + \
        [io.from_cif_string(c) for c in cifs]


def test_poscar_round_trip(tmp_path):
    from pymatgen.io.vasp import Poscar

    for k, c in enumerate(_some_crystals()):
        path = tmp_path / f"POSCAR_{k}"
        io.write(path, c)
        back = io.read(path)
        assert_same(back, c, frac_tol=1e-14, lat_tol=1e-13)
        # pymatgen reads the same file as the same structure
        s = Poscar.from_file(str(path)).structure
        np.testing.assert_allclose(s.frac_coords, np.asarray(c.frac), atol=1e-14)
        np.testing.assert_allclose(s.lattice.matrix, np.asarray(c.lattice), atol=1e-13)
    io.write(tmp_path / "x.vasp", io.example("NaCl"))
    assert_same(io.read(tmp_path / "x.vasp"), io.example("NaCl"))
    io.write(tmp_path / "CONTCAR", io.example("Fe"))
    assert_same(io.read(tmp_path / "CONTCAR"), io.example("Fe"))


def test_extxyz_round_trip_multi_frame(tmp_path):
    crystals = _some_crystals()
    path = tmp_path / "frames.extxyz"
    io.write(path, crystals)
    back = io.read_many(path)
    assert len(back) == len(crystals)
    for a, b in zip(back, crystals):
        # ASE writes positions with 8 decimals (Å)
        np.testing.assert_array_equal(np.asarray(a.numbers), np.asarray(b.numbers))
        np.testing.assert_allclose(np.asarray(a.lattice), np.asarray(b.lattice), atol=1e-8)
        np.testing.assert_allclose(np.asarray(a.positions), np.asarray(b.positions), atol=2e-8)
    assert_same(io.read(path, index=0), back[0])
    assert_same(io.read(path), back[-1])  # default: the last frame, as in ASE
    io.write(tmp_path / "one.xyz", crystals[1])
    assert_same(io.read(tmp_path / "one.xyz"), back[1], frac_tol=1e-8, lat_tol=1e-8)


def test_cif_file_round_trip_and_multiple_blocks(tmp_path):
    crystals = _some_crystals()[:4]
    io.write(tmp_path / "one.cif", crystals[0])
    assert_same_up_to_rotation(io.read(tmp_path / "one.cif"), crystals[0])
    io.write(tmp_path / "many.cif", crystals)
    back = io.read_many(tmp_path / "many.cif")
    assert len(back) == 4
    sm = matcher()
    for a, b in zip(back, crystals):
        assert sm.fit(io.to_pymatgen(a), io.to_pymatgen(b))
    assert sm.fit(io.to_pymatgen(io.read(tmp_path / "many.cif", index=1)), io.to_pymatgen(crystals[1]))


def test_symmetrized_cif_expands_to_same_structure():
    c = io.example("Si", conventional=True)
    text = io.to_cif_string(c, symprec=1e-3)
    assert "Fd-3m" in text.replace(" ", "") or "227" in text
    assert matcher().fit(io.to_pymatgen(io.from_cif_string(text)), io.to_pymatgen(c))


# ------------------------------------------------------------------------------------------ handedness, molecules
def _left_handed_gaas():
    c = io.example("GaAs")
    L = np.asarray(c.lattice)[[0, 2, 1]]  # odd permutation: det < 0
    F = np.asarray(c.frac)[:, [0, 2, 1]]
    assert np.linalg.det(L) < 0
    return c, L, F


def test_left_handed_inputs_become_right_handed(tmp_path):
    import ase
    import ase.io
    from pymatgen.core import Lattice, Structure

    c, L, F = _left_handed_gaas()
    atoms = ase.Atoms(numbers=np.asarray(c.numbers), scaled_positions=F, cell=L, pbc=True)
    structure = Structure(Lattice(L), np.asarray(c.numbers).tolist(), F)
    ase.io.write(tmp_path / "POSCAR", atoms, format="vasp", direct=True)
    ase.io.write(tmp_path / "lh.xyz", atoms, format="extxyz")
    for got in (io.from_ase(atoms), io.from_pymatgen(structure), io.read(tmp_path / "POSCAR"),
                io.read(tmp_path / "lh.xyz")):
        assert float(got.volume) > 0
        # the same atoms at the same cartesian positions, same lattice vectors (as a set)
        np.testing.assert_allclose(np.asarray(got.positions), atoms.positions, atol=1e-7)
        np.testing.assert_allclose(np.abs(float(got.volume)), abs(np.linalg.det(L)), rtol=1e-10)
        assert sorted(map(tuple, np.round(np.asarray(got.lattice), 6))) == sorted(map(tuple, np.round(L, 6)))
        assert matcher().fit(io.to_pymatgen(got), structure)


def test_molecules_need_a_cell(tmp_path):
    from ase.build import molecule

    import ase.io

    water = molecule("H2O")
    with pytest.raises(StructureError, match="non-periodic"):
        io.from_ase(water)
    boxed = io.from_ase(water, cell=10.0 * np.eye(3))
    np.testing.assert_allclose(np.asarray(boxed.positions), water.positions, atol=1e-12)
    ase.io.write(tmp_path / "water.xyz", water, format="extxyz")
    with pytest.raises(FileFormatError, match="water.xyz.*non-periodic"):
        io.read(tmp_path / "water.xyz")
    with pytest.raises(FileFormatError, match="non-periodic"):
        io.read_many(tmp_path / "water.xyz")
    assert io.read(tmp_path / "water.xyz", cell=12.0 * np.eye(3)).formula == boxed.formula


# ------------------------------------------------------------------------------------------ examples
# (space group, experimental density [g/cm^3], CRC Handbook) — the densities test the lattice constants
EXAMPLE_REFERENCE = {
    "Si": (227, 2.329), "C": (227, 3.515), "Ge": (227, 5.323), "GaAs": (216, 5.317), "NaCl": (225, 2.165),
    "MgO": (225, 3.58), "LiF": (225, 2.635), "Al": (225, 2.70), "Cu": (225, 8.96), "Ni": (225, 8.908),
    "Fe": (229, 7.874), "BaTiO3": (221, 6.02), "graphene": (191, None),
}


def _spglib_number(c):
    import spglib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cell = (np.asarray(c.lattice), np.asarray(c.frac), np.asarray(c.numbers))
        return spglib.get_symmetry_dataset(cell, symprec=1e-5).number


@pytest.mark.parametrize("name", io.EXAMPLES)
def test_examples(name):
    assert set(io.EXAMPLES) == set(EXAMPLE_REFERENCE)
    assert name in io.EXAMPLE_SOURCES and "Å" in io.EXAMPLE_SOURCES[name]
    sg, density = EXAMPLE_REFERENCE[name]
    prim = io.example(name).validate()
    conv = io.example(name, conventional=True).validate()
    assert _spglib_number(prim) == sg and _spglib_number(conv) == sg
    assert float(prim.volume) > 0
    ratio = conv.n_atoms / prim.n_atoms
    assert np.isclose(float(conv.volume) / float(prim.volume), ratio)
    if density is not None:
        assert abs(prim.density() / density - 1) < 0.01, (prim.density(), density)
        assert np.isclose(conv.density(), prim.density())


def test_example_cells_and_names(tmp_path, monkeypatch):
    si = io.example("Si")
    assert si.n_atoms == 2 and io.example("Si", conventional=True).n_atoms == 8
    np.testing.assert_allclose(float(si.volume), 5.431**3 / 4)
    d = np.linalg.norm(np.asarray(si.positions[1] - si.positions[0]))
    np.testing.assert_allclose(d, 5.431 * np.sqrt(3) / 4)  # Si-Si bond 2.352 Å
    assert io.example("Al").n_atoms == 1 and io.example("Fe").n_atoms == 1
    assert io.example("BaTiO3").formula == "BaTiO3"
    g = io.example("graphene")
    L = np.asarray(g.lattice)
    assert L[2, 2] >= 15 and np.allclose(L[2, :2], 0) and np.allclose(L[:2, 2], 0)  # ≥ 15 Å vacuum
    pos = np.asarray(g.positions)
    np.testing.assert_allclose(np.linalg.norm(pos[0] - pos[1]), 2.46 / np.sqrt(3))  # C-C 1.42 Å
    assert_same(io.example("diamond"), io.example("C"))
    assert_same(io.example("si"), si)
    assert_same(io.example("SI"), si)
    # read() falls back to the examples when no such file exists
    monkeypatch.chdir(tmp_path)
    assert_same(io.read("Si"), si)
    assert_same(io.read("graphene"), g)
    # ... but an existing file of that name wins
    io.write(tmp_path / "Si.cif", io.example("Ge"))
    assert io.read(str(tmp_path / "Si.cif")).formula == "Ge2"


# ------------------------------------------------------------------------------------------ bad input
MINI_CIF = """data_test
_cell_length_a 4.0
_cell_length_b 4.0
_cell_length_c 4.0
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
_chemical_formula_sum 'Na1 Cl1'
loop_
 _atom_site_type_symbol
 _atom_site_label
 _atom_site_fract_x
 _atom_site_fract_y
 _atom_site_fract_z
 _atom_site_occupancy
 Na Na1 0.0 0.0 0.0 1.0
 Cl Cl1 0.5 0.5 0.5 1.0
"""


def _no_foreign_traceback(excinfo):
    e = excinfo.value
    assert isinstance(e, DifcrysError)
    assert e.__cause__ is None, "parser exception chained"
    assert e.__context__ is None or e.__suppress_context__, "parser exception shown as context"


def test_mini_cif_reads():
    c = io.from_cif_string(MINI_CIF)
    assert sorted(c.symbols) == ["Cl", "Na"]


def test_nonexistent_file():
    with pytest.raises(FileFormatError, match=r"file not found: '/no/such/dir/x\.cif'") as e:
        io.read("/no/such/dir/x.cif")
    assert "Si" in str(e.value)  # lists the examples
    with pytest.raises(FileFormatError, match="file not found"):
        io.read_many("/no/such/frames.xyz")


def test_unknown_example_name():
    with pytest.raises(FileFormatError, match="unknown example 'Unobtainium'.*Si, C, Ge"):
        io.example("Unobtainium")
    with pytest.raises(FileFormatError, match="'Unobtainium'.*not the name of a built-in example.*GaAs"):
        io.read("Unobtainium")


@pytest.mark.parametrize("text,problem", [
    ("this is not a CIF file at all\n", "no data_ block"),
    ("data_x\n_cell_length_a 3.0\n", "lacks _cell_length_b"),
    (MINI_CIF.replace("0.5 0.5 0.5", "0.5 0.5x 0.5"), "could not convert string to float: '0.5x'"),
    (MINI_CIF.replace("_cell_angle_gamma 90", "_cell_angle_gamma ninety"), "ninety"),
    (MINI_CIF.replace("_cell_angle_gamma 90", "_cell_angle_gamma 200"), "invalid cell"),
    (MINI_CIF.replace("0.5 0.5 0.5", "0.01 0.0 0.0"), "overlapping atoms"),
    ("", "empty CIF"),
])
def test_malformed_cif(tmp_path, text, problem):
    path = tmp_path / "bad.cif"
    path.write_text(text)
    with pytest.raises(FileFormatError, match="bad.cif") as e:
        io.read(path)
    assert problem in str(e.value), str(e.value)
    _no_foreign_traceback(e)
    with pytest.raises(FileFormatError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        io.from_cif_string(text)


@pytest.mark.parametrize("cut,problem", [
    (lambda s: s[: s.index("loop_")], "lacks _atom_site_fract_x"),              # before the atom loop
    (lambda s: s[: s.rindex(" Na Na1")], "column names but no values"),       # loop header only
    (lambda s: s[: s.rindex(" Cl Cl1")], "do not match the chemical formula"),  # one atom line lost
    (lambda s: s[: s.rindex(" 0.5 0.5 1.0")], "incomplete row"),              # cut mid-line
])
def test_truncated_cif(tmp_path, cut, problem):
    path = tmp_path / "cut.cif"
    path.write_text(cut(MINI_CIF))
    with pytest.raises(FileFormatError, match="cut.cif.*truncated") as e:
        io.read(path)
    assert problem in str(e.value), str(e.value)
    _no_foreign_traceback(e)
    # the formula check can be switched off for files whose formula is known to disagree
    if "formula" in problem:
        assert io.read(path, check_formula=False).n_atoms == 1


def test_every_truncation_of_a_real_cif_is_caught():
    """Cutting a real CIF anywhere either raises FileFormatError or leaves the structure unchanged
    (cuts inside the last number or in trailing whitespace)."""
    cif = _rows("mp_20_xrd_subset", "test_subset.csv", stride=1)[5]
    full = io.from_cif_string(cif)
    unchanged = 0
    for n in range(0, len(cif), 4):
        try:
            c = io.from_cif_string(cif[:n])
        except FileFormatError:
            continue
        assert_same(c, full, frac_tol=1e-6, lat_tol=1e-6)
        unchanged += 1
    assert unchanged <= 3


@pytest.mark.parametrize("site,problem", [
    (" Cl Cl1 0.5 0.5 0.5 0.5", "partial occupancy at Cl1 (occupancies: Cl 0.5)"),
    (" Cl Cl1 0.5 0.5 0.5 0.5\n Br Br1 0.5 0.5 0.5 0.5", "partial occupancy"),
])
def test_partial_occupancy(tmp_path, site, problem):
    text = MINI_CIF.replace(" Cl Cl1 0.5 0.5 0.5 1.0", site).replace("'Na1 Cl1'", "'Na1 Cl0.5 Br0.5'")
    (tmp_path / "disordered.cif").write_text(text)
    with pytest.raises(FileFormatError, match="disordered.cif") as e:
        io.read(tmp_path / "disordered.cif")
    assert problem in str(e.value)
    assert "ordered structure" in str(e.value)
    from pymatgen.core import Lattice, Structure

    s = Structure(Lattice.cubic(4.0), ["Na", {"Cl": 0.5, "Br": 0.5}], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(StructureError, match="partial occupancy"):
        io.from_pymatgen(s)


def test_unknown_format_and_directory(tmp_path):
    (tmp_path / "structure.foo").write_text("hello")
    with pytest.raises(FileFormatError, match="structure.foo.*cannot tell the file format.*cif, vasp, extxyz"):
        io.read(tmp_path / "structure.foo")
    with pytest.raises(FileFormatError, match="unknown format 'pdb'"):
        io.read(tmp_path / "structure.foo", format="pdb")
    with pytest.raises(FileFormatError, match="unknown format"):
        io.write(tmp_path / "out.cif", io.example("Si"), format="gaussian")
    with pytest.raises(FileFormatError, match="cannot tell"):
        io.write(tmp_path / "out.dat", io.example("Si"))
    with pytest.raises(FileFormatError, match="is a directory"):
        io.read(tmp_path, format="cif")
    # an explicit format overrides the name
    io.write(tmp_path / "si.txt", io.example("Si"), format="poscar")
    assert_same(io.read(tmp_path / "si.txt", format="vasp"), io.example("Si"))


def test_truncated_or_malformed_poscar(tmp_path):
    io.write(tmp_path / "POSCAR", io.example("GaAs"))
    text = (tmp_path / "POSCAR").read_text()
    lines = text.splitlines()
    cases = {
        "\n".join(lines[:3]): "only 3 lines",
        "\n".join(lines[:-1]): "2 atoms declared but only 1 coordinate lines",
        "\n".join(lines[:-1] + ["  0.25"]): "should hold 3 numbers",  # ASE alone would broadcast 0.25
        text.replace(lines[3], "  2.8 oops 2.8"): "lattice vector",
    }
    for bad, problem in cases.items():
        (tmp_path / "CONTCAR").write_text(bad)
        with pytest.raises(FileFormatError, match="CONTCAR.*POSCAR/CONTCAR") as e:
            io.read(tmp_path / "CONTCAR")
        assert problem in str(e.value), str(e.value)


def test_malformed_extxyz(tmp_path):
    (tmp_path / "bad.xyz").write_text('2\nLattice="1 0 0"\nSi 0 0 0\n')
    with pytest.raises(FileFormatError, match="bad.xyz.*malformed or truncated extxyz") as e:
        io.read(tmp_path / "bad.xyz")
    _no_foreign_traceback(e)
    io.write(tmp_path / "good.xyz", [io.example("Si"), io.example("Ge")])
    text = (tmp_path / "good.xyz").read_text()
    (tmp_path / "cut.xyz").write_text(text[: len(text) - 60])
    with pytest.raises(FileFormatError, match="cut.xyz"):
        io.read_many(tmp_path / "cut.xyz")


def test_write_errors_and_conversions(tmp_path):
    with pytest.raises(FileFormatError, match="one structure"):
        io.write(tmp_path / "POSCAR", [io.example("Si"), io.example("Ge")])
    with pytest.raises(FileFormatError, match="cannot write"):
        io.write(tmp_path / "no" / "such" / "dir.cif", io.example("Si"))
    with pytest.raises(StructureError, match="batch"):
        io.to_ase(batch([io.example("Si"), io.example("Al")]))
    with pytest.raises(StructureError, match="ase.Atoms"):
        io.from_ase("not atoms")
    with pytest.raises(StructureError, match="pymatgen Structure"):
        io.from_pymatgen(np.eye(3))
    # padded crystals are written without their padding atoms
    from difcrys.crystal import pad

    padded = pad(io.example("GaAs"), 5)
    assert len(io.to_ase(padded)) == 2
    assert_same(io.from_pymatgen(io.to_pymatgen(padded)), io.example("GaAs"))
    assert isinstance(io.from_ase(io.to_ase(padded)), Crystal)


def test_min_image_distance_matches_brute_force_on_skewed_cells():
    """The k-d tree over periodic images gives the same minimum distance as a brute-force scan of
    every pair and image (skewed cells, atoms outside [0, 1), and a one-atom cell whose nearest
    neighbour is its own image)."""
    from difcrys.crystal import min_image_distance

    rng = np.random.default_rng(0)

    def brute(frac, L):
        shifts = np.stack(np.meshgrid(*[np.arange(-3, 4)] * 3, indexing="ij"), -1).reshape(-1, 3)
        best = np.inf
        for i in range(len(frac)):
            for j in range(len(frac)):
                d = np.linalg.norm((frac[j] - frac[i] + shifts) @ L, axis=1)
                if i == j:
                    d = d[np.any(shifts != 0, axis=1)]
                best = min(best, d.min())
        return best

    for trial in range(6):
        L = np.diag(rng.uniform(2.5, 5.0, 3)) + rng.uniform(-1.0, 1.0, (3, 3)) * (trial % 2)
        frac = rng.uniform(-1.0, 2.0, (int(rng.integers(2, 9)), 3))
        d, (i, j) = min_image_distance(frac, L)
        np.testing.assert_allclose(d, brute(frac, L), rtol=1e-12)
        assert i != j or len(frac) == 1
    L = np.array([[2.1, 0.0, 0.0], [0.7, 2.3, 0.0], [0.3, 0.4, 2.6]])
    d, pair = min_image_distance(np.zeros((1, 3)), L)
    np.testing.assert_allclose(d, brute(np.zeros((1, 3)), L), rtol=1e-12)
    assert pair == (0, 0)
