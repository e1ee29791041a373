"""Reading and writing crystals: CIF, POSCAR/CONTCAR, extxyz; ASE and pymatgen interop; examples.

Formats (host-side code, never traced by JAX); the format follows the file
name unless ``format=`` is given:

- ``"cif"`` (``*.cif``): read with pymatgen's ``CifParser``; written in P1 by
  difcrys (12 decimals) or symmetrized through pymatgen's ``CifWriter``.
- ``"vasp"`` (``POSCAR*``, ``CONTCAR*``, ``*.vasp``, ``*.poscar``): ASE, direct
  coordinates with 16 decimals (lossless); the layout is checked first because
  ASE silently broadcasts a cut-off coordinate line.
- ``"extxyz"`` (``*.xyz``, ``*.extxyz``): ASE, multi-frame (:func:`read_many`);
  ASE writes positions with 8 decimals (1e-8 Å).

Round trips are lossless to double precision when JAX runs in float64
(``jax_enable_x64``); otherwise the Crystal itself stores float32.

**Why pymatgen for CIF.** pymatgen's parser expands symmetry operations and
merges duplicate sites robustly, reports partial occupancies as disordered
sites (which difcrys rejects with a clear message), and checks the atom-site
composition against ``_chemical_formula_sum`` — which is how a *truncated* CIF
(atom list cut short) is detected here. ASE is used for everything else.
Atom order of a parsed CIF is pymatgen's: sorted by element electronegativity,
file order within an element. The lattice read from a CIF is rebuilt from its
parameters in the standard orientation of
:func:`difcrys.crystal.lattice_from_parameters` (``a ∥ x``, ``b`` in the xy
plane), as ASE does.

A CIF whose atom sites disagree with its ``_chemical_formula_sum`` raises
(``check_formula=False`` accepts it, e.g. experimental CIFs without H atoms).
A cut inside the last number of a file cannot be detected by any reader.

**Handedness.** :meth:`difcrys.crystal.Crystal.validate` rejects left-handed
lattices (``det L < 0``). Structures coming from files, ASE or pymatgen with a
left-handed cell are converted by swapping the first two lattice vectors and
the first two fractional-coordinate columns; cartesian positions are unchanged
(``X P · P L = X L`` with ``P`` the swap permutation), so it is the same
structure described by a right-handed basis.

**Non-periodic input.** A structure without a full-rank cell (a molecule in
an ``.xyz`` file) raises an error unless ``cell=`` is passed. A full-rank cell
is always used as 3D periodic; ASE ``pbc`` flags are otherwise ignored.

**Errors.** Every problem with a file (missing, unknown format, malformed or
truncated content, partial occupancy, non-periodic or invalid structure)
raises :class:`difcrys.errors.FileFormatError` whose message names the file
and the problem; the parser's own exception is summarised in the message and
not chained (no third-party traceback escapes). Conversions from in-memory
ASE/pymatgen objects raise :class:`difcrys.errors.StructureError`.

**Examples.** :func:`example` builds small textbook crystals with experimental
room-temperature lattice constants (see :data:`EXAMPLE_SOURCES`); ``read``
falls back to them when its argument is not an existing file, so
``difcrys <command> Si`` works without a file.
"""

from __future__ import annotations

import math
import os
import pathlib
import warnings

import numpy as np

from difcrys.crystal import Crystal, chemical_symbol, lattice_from_parameters
from difcrys.errors import DifcrysError, FileFormatError, StructureError

__all__ = [
    "FORMATS",
    "EXAMPLES",
    "EXAMPLE_SOURCES",
    "read",
    "read_many",
    "write",
    "guess_format",
    "from_ase",
    "to_ase",
    "from_pymatgen",
    "to_pymatgen",
    "from_cif_string",
    "to_cif_string",
    "example",
    "is_example",
]

FORMATS = ("cif", "vasp", "extxyz")
_FORMAT_ALIASES = {
    "cif": "cif",
    "vasp": "vasp",
    "poscar": "vasp",
    "contcar": "vasp",
    "extxyz": "extxyz",
    "xyz": "extxyz",
}


# --------------------------------------------------------------------------- helpers
def _right_handed(frac: np.ndarray, lattice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Swap lattice rows 0,1 and fractional columns 0,1 when ``det L < 0`` (cartesian unchanged)."""
    if np.linalg.det(lattice) < 0:
        lattice = lattice[[1, 0, 2]]
        frac = frac[:, [1, 0, 2]]
    return frac, lattice


def _build(numbers, frac, lattice, what: str) -> Crystal:
    """Crystal from raw arrays, made right-handed, validated; StructureError names ``what``."""
    numbers = np.asarray(numbers)
    frac = np.asarray(frac, dtype=float).reshape(-1, 3)
    lattice = np.asarray(lattice, dtype=float)
    if len(numbers) == 0:
        raise StructureError(f"{what}: empty structure (no atoms)")
    if lattice.shape != (3, 3) or not np.all(np.isfinite(lattice)):
        raise StructureError(f"{what}: lattice must be a finite 3x3 matrix")
    if abs(np.linalg.det(lattice)) < 1e-8:
        raise StructureError(
            f"{what}: non-periodic structure or singular cell (cell volume ~ 0); "
            "difcrys needs a 3D periodic crystal — pass cell=[[...],[...],[...]] (Å) to put it in a box")
    frac, lattice = _right_handed(frac, lattice)
    try:
        return Crystal.create(numbers, frac, lattice)
    except StructureError as e:
        raise type(e)(f"{what}: {e}") from None


def _cell_parameters(lattice: np.ndarray) -> tuple[float, ...]:
    """(a, b, c [Å], α, β, γ [deg]) of lattice rows, in NumPy float64 (host-side)."""
    lengths = np.linalg.norm(lattice, axis=1)

    def angle(i, j):
        cos = float(lattice[i] @ lattice[j] / (lengths[i] * lengths[j]))
        return math.degrees(math.acos(min(1.0, max(-1.0, cos))))

    return (*(float(x) for x in lengths), angle(1, 2), angle(0, 2), angle(0, 1))


def _single(crystal: Crystal) -> Crystal:
    if np.asarray(crystal.numbers).ndim != 1:
        raise StructureError("expected a single crystal, got a batch (use difcrys.crystal.unbatch)")
    return crystal if bool(np.all(np.asarray(crystal.mask))) else crystal.unpadded()


def _examples_hint() -> str:
    return "built-in examples: " + ", ".join(EXAMPLES)


# --------------------------------------------------------------------------- ASE
def from_ase(atoms, cell=None) -> Crystal:
    """Crystal from an ``ase.Atoms``.

    Args:
        atoms: an ASE ``Atoms`` with a full-rank cell (lattice rows, Å).
        cell: optional ``[3, 3]`` cell (rows, Å) replacing the atoms' cell —
            needed for molecules; cartesian positions are kept.

    Returns:
        The crystal; left-handed cells are made right-handed (module docstring).

    Raises:
        StructureError: no full-rank cell (molecule) and no ``cell``; invalid structure.
    """
    try:
        import ase
    except ImportError as e:  # pragma: no cover
        raise StructureError(f"ASE is required for from_ase: {e}") from None
    if not isinstance(atoms, ase.Atoms):
        raise StructureError(f"from_ase expects an ase.Atoms, got {type(atoms).__name__}")
    positions = np.asarray(atoms.get_positions(), dtype=float)
    lattice = np.asarray(atoms.cell.array if cell is None else cell, dtype=float)
    if lattice.shape != (3, 3):
        raise StructureError(f"cell must be 3x3 (rows, Å), got shape {lattice.shape}")
    if abs(np.linalg.det(lattice)) < 1e-8:
        pbc = np.asarray(atoms.pbc).tolist()
        raise StructureError(
            f"non-periodic structure ({atoms.get_chemical_formula()}, pbc={pbc}, cell rank "
            f"{np.linalg.matrix_rank(lattice, tol=1e-6)}): difcrys needs a 3D periodic crystal; "
            "pass cell=[[...],[...],[...]] (Å) to put it in a box")
    frac = np.linalg.solve(lattice.T, positions.T).T
    return _build(atoms.numbers, frac, lattice, f"ASE Atoms {atoms.get_chemical_formula()}")


def to_ase(crystal: Crystal):
    """``ase.Atoms`` (periodic in 3D) of a single crystal; padding atoms are dropped."""
    import ase

    c = _single(crystal)
    lattice = np.asarray(c.lattice, dtype=float)
    frac = np.asarray(c.frac, dtype=float)
    return ase.Atoms(numbers=np.asarray(c.numbers), positions=frac @ lattice, cell=lattice, pbc=True)


# --------------------------------------------------------------------------- pymatgen
def _disorder_message(structure) -> str | None:
    for i, site in enumerate(structure):
        comp = site.species
        if len(comp) != 1 or abs(sum(comp.values()) - 1.0) > 1e-8:
            label = getattr(site, "label", None) or f"site {i}"
            occ = ", ".join(f"{sp} {occu:g}" for sp, occu in comp.items())
            return (f"partial occupancy at {label} (occupancies: {occ}); difcrys needs an ordered "
                    "structure with every site fully occupied by one element — order it first, e.g. "
                    "with pymatgen's OrderDisorderedStructureTransformation in a supercell")
    return None


def from_pymatgen(structure) -> Crystal:
    """Crystal from a pymatgen ``Structure`` (lattice matrix kept as is, rows in Å).

    Raises:
        StructureError: disordered (partial occupancy) sites, dummy species, invalid structure.
    """
    try:
        from pymatgen.core import Structure
    except ImportError as e:  # pragma: no cover
        raise StructureError(f"pymatgen is required for from_pymatgen: {e}") from None
    if not isinstance(structure, Structure):
        raise StructureError(f"from_pymatgen expects a pymatgen Structure, got {type(structure).__name__}")
    msg = _disorder_message(structure)
    if msg:
        raise StructureError(msg)
    numbers = []
    for i, site in enumerate(structure):
        z = getattr(site.specie, "Z", None)
        if z is None:
            raise StructureError(f"site {i} has no element ({site.specie!s}); dummy species are not supported")
        numbers.append(int(z))
    return _build(numbers, structure.frac_coords, structure.lattice.matrix,
                  f"pymatgen Structure {structure.composition.reduced_formula}")


def to_pymatgen(crystal: Crystal):
    """pymatgen ``Structure`` of a single crystal (fractional coordinates kept, not wrapped)."""
    from pymatgen.core import Lattice, Structure

    c = _single(crystal)
    return Structure(Lattice(np.asarray(c.lattice, dtype=float)),
                     [int(z) for z in np.asarray(c.numbers)],
                     np.asarray(c.frac, dtype=float), coords_are_cartesian=False)


# --------------------------------------------------------------------------- CIF
_BENIGN_CIF_WARNINGS = ("rounded to ideal values", "The default value of primitive",
                        "No _symmetry_equiv_pos_as_xyz type key found. Spacegroup from")


def _formula_mismatch(block: dict, structure) -> str | None:
    """Why the atom sites disagree with ``_chemical_formula_sum`` (relative stoichiometry), or None."""
    from pymatgen.core import Composition

    formula = block.get("_chemical_formula_sum") or block.get("_chemical_formula_structural")
    if not formula or not isinstance(formula, str):
        return None
    try:
        expected = Composition(formula).remove_charges().get_el_amt_dict()
    except Exception:  # noqa: BLE001 - an unparsable formula is not checked
        return None
    found = structure.composition.remove_charges().get_el_amt_dict()
    if set(expected) != set(found):
        return f"formula {formula.strip()!r} has elements {sorted(expected)}, atom sites have {sorted(found)}"
    ratios = [found[e] / expected[e] for e in expected if expected[e] > 0]
    if ratios and max(ratios) - min(ratios) > 0.01 * max(ratios):
        got = " ".join(f"{e}{found[e]:g}" for e in found)
        return f"formula {formula.strip()!r} but atom sites give {got}"
    return None


_CELL_KEYS = ("_cell_length_a", "_cell_length_b", "_cell_length_c",
              "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma")


def _tokenise_error(e: Exception, source: str) -> FileFormatError:
    """A readable FileFormatError for an exception raised while tokenising a CIF."""
    if isinstance(e, ZeroDivisionError):
        return FileFormatError(f"{source}: malformed or truncated CIF: a loop_ has column names but no values")
    if isinstance(e, ValueError) and ("not a multiple" in str(e) or "zip()" in str(e)):
        return FileFormatError(f"{source}: malformed or truncated CIF: a loop_ has an incomplete row "
                               f"(number of values is not a multiple of the number of columns; {e})")
    return FileFormatError(f"{source}: malformed CIF ({type(e).__name__}: {e})")


def _check_cell_values(block: dict, where: str) -> None:
    """Lattice parameters must be numbers with lengths > 0 and angles in (0°, 180°)."""
    from pymatgen.io.cif import str2float

    for key in _CELL_KEYS:
        raw = block[key]
        try:
            value = str2float(raw[0] if isinstance(raw, list) else raw)
        except Exception:  # noqa: BLE001
            raise FileFormatError(f"{where}: malformed CIF: {key} = {raw!r} is not a number") from None
        is_angle = "angle" in key
        if not np.isfinite(value) or value <= 0 or (is_angle and value >= 180):
            bound = "between 0 and 180 degrees" if is_angle else "a positive length in Å"
            raise FileFormatError(f"{where}: invalid cell: {key} = {raw!r} (must be {bound})")


def _check_cif_blocks(blocks: dict, source: str) -> None:
    """Check that the data blocks hold the items a crystal needs, naming the missing ones."""
    if not blocks:
        raise FileFormatError(f"{source}: malformed CIF: no data_ block found (is this a CIF file?)")
    wanted = list(_CELL_KEYS) + ["_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z"]
    n_struct = 0
    for name, block in blocks.items():
        keys = set(block)
        if not any(k in keys for k in wanted) and not any(k.startswith("_atom_site") for k in keys):
            continue  # a block without a structure (e.g. publication data)
        missing = [k for k in wanted if k not in keys]
        if not ({"_atom_site_type_symbol", "_atom_site_label"} & keys):
            missing.append("_atom_site_type_symbol or _atom_site_label")
        if missing:
            raise FileFormatError(f"{source}: malformed or truncated CIF: data block {name!r} lacks "
                                  f"{', '.join(missing)}")
        _check_cell_values(block, f"{source}: data block {name!r}")
        n_struct += 1
    if n_struct == 0:
        raise FileFormatError(f"{source}: malformed CIF: no data block with a cell and atom sites")


def _parse_cif(text: str, source: str, check_formula: bool = True) -> list[Crystal]:
    """All structures of a CIF text; FileFormatError names ``source`` and the problem."""
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifParser

    if not text.strip():
        raise FileFormatError(f"{source}: empty CIF file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser = CifParser.from_str(text, check_cif=False)
        except Exception as e:  # noqa: BLE001 - any tokeniser failure becomes a FileFormatError
            raise _tokenise_error(e, source) from None
        blocks = parser.as_dict()
        _check_cif_blocks(blocks, source)
        try:
            structures = parser.parse_structures(primitive=False, on_error="ignore")
            failures = [str(w) for w in parser.warnings if "No structure parsed" in str(w)]
            if failures:
                raise ValueError(" | ".join(failures))
        except Exception as e:  # noqa: BLE001 - any parser failure becomes a FileFormatError
            notes = [str(w.message) for w in caught if not any(b in str(w.message) for b in _BENIGN_CIF_WARNINGS)]
            notes += [str(n) for n in parser.warnings]
            notes = [n for n in notes if n not in str(e)]
            detail = " | ".join(dict.fromkeys(" ".join(n.split()) for n in [f"{type(e).__name__}: {e}"] + notes))
            raise FileFormatError(f"{source}: malformed CIF, no structure could be read ({detail})") from None
    other = [" ".join(str(w.message).split()) for w in caught
             if not any(b in str(w.message) for b in _BENIGN_CIF_WARNINGS)]
    if other:
        warnings.warn(f"{source}: CIF parser warnings: {' | '.join(dict.fromkeys(other))}", stacklevel=3)
    blocks = [b for b in blocks.values() if "_cell_length_a" in b]
    out = []
    for k, s in enumerate(structures):
        where = source if len(structures) == 1 else f"{source} (data block {k + 1})"
        s = Structure.from_sites(s.sites)  # plain Structure, pymatgen atom order (see module doc)
        msg = _disorder_message(s)
        if msg:
            raise FileFormatError(f"{where}: {msg}")
        if check_formula and len(blocks) == len(structures):
            reason = _formula_mismatch(blocks[k], s)
            if reason:
                raise FileFormatError(
                    f"{where}: atom sites do not match the chemical formula — truncated or inconsistent CIF "
                    f"({reason}); pass check_formula=False to accept it anyway")
        try:
            lattice = lattice_from_parameters(*s.lattice.parameters)
        except StructureError as e:
            raise FileFormatError(f"{where}: invalid cell: {e}") from None
        try:
            out.append(_build([site.specie.Z for site in s], s.frac_coords, lattice, where))
        except StructureError as e:
            raise FileFormatError(f"invalid structure in {e}") from None
    return out


def from_cif_string(s: str, index: int = 0, check_formula: bool = True) -> Crystal:
    """Crystal from the text of a CIF (pymatgen parser; data block ``index``).

    Raises:
        FileFormatError: malformed or truncated CIF, partial occupancy, invalid structure.
    """
    crystals = _parse_cif(s, "CIF string", check_formula=check_formula)
    try:
        return crystals[index]
    except IndexError:
        raise FileFormatError(f"CIF string: data block index {index} out of range ({len(crystals)} blocks)") from None


def to_cif_string(crystal: Crystal, symprec: float | None = None, decimals: int = 12, name: str | None = None) -> str:
    """CIF text of a single crystal.

    Args:
        crystal: the crystal (padding dropped).
        symprec: if given, write a symmetrized CIF (space group found by spglib at this
            tolerance, Å) through pymatgen's ``CifWriter``; default: P1 with every atom.
        decimals: decimals of fractional coordinates and lattice parameters in P1 mode.
        name: the ``data_`` block name (default: the formula).
    """
    c = _single(crystal)
    if symprec is not None:
        from pymatgen.io.cif import CifWriter

        return str(CifWriter(to_pymatgen(c), symprec=symprec, significant_figures=decimals))
    lattice = np.asarray(c.lattice, dtype=float)
    a, b, cc, al, be, ga = _cell_parameters(lattice)
    frac = np.asarray(c.frac, dtype=float)
    symbols = [chemical_symbol(int(z)) for z in np.asarray(c.numbers)]
    counts: dict[str, int] = {}
    for s in symbols:
        counts[s] = counts.get(s, 0) + 1
    formula = " ".join(f"{s}{n}" for s, n in counts.items())
    d = int(decimals)
    lines = [
        "# generated by difcrys",
        f"data_{name or c.formula}",
        "_symmetry_space_group_name_H-M   'P 1'",
        "_symmetry_Int_Tables_number   1",
        f"_cell_length_a   {a:.{d}f}",
        f"_cell_length_b   {b:.{d}f}",
        f"_cell_length_c   {cc:.{d}f}",
        f"_cell_angle_alpha   {al:.{d}f}",
        f"_cell_angle_beta   {be:.{d}f}",
        f"_cell_angle_gamma   {ga:.{d}f}",
        f"_cell_volume   {abs(np.linalg.det(lattice)):.{d}f}",
        f"_chemical_formula_sum   '{formula}'",
        "loop_",
        " _symmetry_equiv_pos_site_id",
        " _symmetry_equiv_pos_as_xyz",
        "  1  'x, y, z'",
        "loop_",
        " _atom_site_type_symbol",
        " _atom_site_label",
        " _atom_site_fract_x",
        " _atom_site_fract_y",
        " _atom_site_fract_z",
        " _atom_site_occupancy",
    ]
    seen: dict[str, int] = {}
    for s, f in zip(symbols, frac):
        seen[s] = seen.get(s, 0) + 1
        lines.append(f"  {s}  {s}{seen[s]}  {f[0]:.{d}f}  {f[1]:.{d}f}  {f[2]:.{d}f}  1")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- files
def guess_format(path) -> str:
    """Format name (one of :data:`FORMATS`) from a file name.

    Raises:
        FileFormatError: the name does not tell the format.
    """
    p = pathlib.Path(path)
    name = p.name.lower()
    suffix = p.suffix.lower().lstrip(".")
    if suffix == "cif":
        return "cif"
    if name.startswith(("poscar", "contcar")) or suffix in ("vasp", "poscar"):
        return "vasp"
    if suffix in ("xyz", "extxyz"):
        return "extxyz"
    raise FileFormatError(
        f"{str(p)!r}: cannot tell the file format from its name; pass format= one of {', '.join(FORMATS)} "
        "(recognised names: *.cif, POSCAR*, CONTCAR*, *.vasp, *.xyz, *.extxyz)")


def _resolve_format(path, format) -> str:
    if format is None:
        return guess_format(path)
    fmt = _FORMAT_ALIASES.get(str(format).lower())
    if fmt is None:
        raise FileFormatError(f"{str(path)!r}: unknown format {format!r}; supported: {', '.join(FORMATS)}")
    return fmt


def _check_file(path) -> pathlib.Path:
    p = pathlib.Path(path)
    if not p.exists():
        raise FileFormatError(f"file not found: {str(p)!r} (and it is not the name of a built-in example; "
                              f"{_examples_hint()})")
    if p.is_dir():
        raise FileFormatError(f"{str(p)!r} is a directory, not a structure file")
    return p


def _check_poscar(p: pathlib.Path) -> None:
    """Check the POSCAR layout (ASE silently broadcasts a cut-off coordinate line)."""

    def fail(why):
        raise FileFormatError(f"{str(p)!r}: malformed or truncated POSCAR/CONTCAR file: {why}")

    def floats(line, k):
        try:
            return [float(x) for x in line.split()[:k]] if len(line.split()) >= k else None
        except ValueError:
            return None

    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        fail(f"cannot read as text ({type(e).__name__}: {e})")
    if len(lines) < 8:
        fail(f"only {len(lines)} lines (a POSCAR needs a comment, scale, 3 lattice lines, counts and coordinates)")
    for i in (2, 3, 4):
        if floats(lines[i], 3) is None:
            fail(f"line {i + 1} should hold a lattice vector (3 numbers), got {lines[i].strip()!r}")
    i = 5
    if not all(t.isdigit() for t in lines[i].split()):
        i += 1  # VASP 5 symbols line
    counts = lines[i].split() if i < len(lines) else []
    if not counts or not all(t.isdigit() for t in counts):
        fail(f"line {i + 1} should hold the atom counts, got {(lines[i] if i < len(lines) else '').strip()!r}")
    n = sum(int(t) for t in counts)
    i += 1
    if i < len(lines) and lines[i].strip()[:1] in ("s", "S"):
        i += 1  # selective dynamics
    if i >= len(lines):
        fail("missing the Direct/Cartesian line and the coordinates")
    i += 1
    coords = lines[i:i + n]
    for k, line in enumerate(coords):
        if floats(line, 3) is None:
            fail(f"coordinate line {i + k + 1} (atom {k + 1} of {n}) should hold 3 numbers, got {line.strip()!r}")
    if len(coords) < n:
        fail(f"{n} atoms declared but only {len(coords)} coordinate lines")


def _read_ase_frames(p: pathlib.Path, fmt: str, index):
    import ase.io

    if fmt == "vasp":
        _check_poscar(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            frames = ase.io.read(str(p), index=index, format=fmt)
        except Exception as e:  # noqa: BLE001 - any parser failure becomes a FileFormatError
            kind = "POSCAR/CONTCAR" if fmt == "vasp" else fmt
            raise FileFormatError(
                f"{str(p)!r}: malformed or truncated {kind} file ({type(e).__name__}: {e})") from None
    return frames


def _crystal_from_ase_in_file(atoms, p, cell, k=None) -> Crystal:
    where = repr(str(p)) if k is None else f"{str(p)!r} (frame {k})"
    try:
        return from_ase(atoms, cell=cell)
    except DifcrysError as e:
        raise FileFormatError(f"{where}: {e}") from None


def read(path_or_name, format: str | None = None, index: int = -1, *, cell=None,
         check_formula: bool = True) -> Crystal:
    """Read one crystal from a file, or build a built-in example by name.

    Args:
        path_or_name: a file path, or — when no such file exists — the name of a
            built-in example (:data:`EXAMPLES`, e.g. ``"Si"``).
        format: ``"cif"``, ``"vasp"`` (POSCAR/CONTCAR) or ``"extxyz"``; default: from the name.
        index: which frame of a multi-frame file (extxyz frames, CIF data blocks);
            default the last, as in ASE.
        cell: ``[3, 3]`` cell (rows, Å) for non-periodic inputs (molecules in .xyz).
        check_formula: for CIF, compare the atom sites with ``_chemical_formula_sum``
            (detects truncated files).

    Returns:
        The crystal (right-handed, validated).

    Raises:
        FileFormatError: missing file that is not an example name, unknown format,
            malformed/truncated content, partial occupancy, non-periodic or invalid structure.
    """
    if isinstance(path_or_name, str) and not os.path.exists(path_or_name) and is_example(path_or_name):
        return example(path_or_name)
    p = _check_file(path_or_name)
    fmt = _resolve_format(p, format)
    if fmt == "cif":
        crystals = _read_cif_file(p, check_formula)
        try:
            return crystals[index]
        except IndexError:
            raise FileFormatError(f"{str(p)!r}: index {index} out of range ({len(crystals)} data blocks)") from None
    atoms = _read_ase_frames(p, fmt, index)
    if isinstance(atoms, list):  # pragma: no cover - int index returns one Atoms
        atoms = atoms[0]
    return _crystal_from_ase_in_file(atoms, p, cell)


def _read_cif_file(p: pathlib.Path, check_formula: bool) -> list[Crystal]:
    try:
        text = p.read_text(errors="strict")
    except (UnicodeDecodeError, OSError) as e:
        raise FileFormatError(f"{str(p)!r}: cannot read as a text CIF file ({type(e).__name__}: {e})") from None
    return _parse_cif(text, repr(str(p)), check_formula=check_formula)


def read_many(path, format: str | None = None, *, cell=None, check_formula: bool = True) -> list[Crystal]:
    """Read every frame of a file (extxyz frames, CIF data blocks; a POSCAR gives one).

    Raises:
        FileFormatError: as :func:`read`.
    """
    p = _check_file(path)
    fmt = _resolve_format(p, format)
    if fmt == "cif":
        return _read_cif_file(p, check_formula)
    frames = _read_ase_frames(p, fmt, ":")
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise FileFormatError(f"{str(p)!r}: no structures in file")
    return [_crystal_from_ase_in_file(a, p, cell, k) for k, a in enumerate(frames)]


def write(path, crystal, format: str | None = None, **kw) -> None:
    """Write a crystal (or, for extxyz and CIF, a list of crystals) to a file.

    Args:
        path: output file; the format follows its name unless ``format`` is given.
        crystal: a single Crystal, or a sequence of them (extxyz frames / CIF data blocks).
        format: ``"cif"``, ``"vasp"`` or ``"extxyz"``.
        **kw: for CIF, passed to :func:`to_cif_string` (``symprec``, ``decimals``).

    Raises:
        FileFormatError: unknown format, several crystals for POSCAR, or an OS error.
    """
    p = pathlib.Path(path)
    fmt = _resolve_format(p, format)
    crystals = [crystal] if isinstance(crystal, Crystal) else list(crystal)
    if not crystals:
        raise FileFormatError(f"{str(p)!r}: nothing to write (empty list of crystals)")
    try:
        if fmt == "cif":
            names = [None] if len(crystals) == 1 else [f"{_single(c).formula}_{k}" for k, c in enumerate(crystals)]
            text = "\n".join(to_cif_string(c, name=n, **kw) for c, n in zip(crystals, names))
            p.write_text(text)
            return
        import ase.io

        images = [to_ase(c) for c in crystals]
        if fmt == "vasp":
            if len(images) != 1:
                raise FileFormatError(f"{str(p)!r}: a POSCAR holds one structure, got {len(images)}")
            ase.io.write(str(p), images[0], format="vasp", direct=True, sort=False)
        else:
            ase.io.write(str(p), images, format="extxyz")
    except OSError as e:
        raise FileFormatError(f"cannot write {str(p)!r}: {e}") from None


# --------------------------------------------------------------------------- examples
# name: (kind, a [Å], c [Å] or None, basis [(symbol, position in units of the cubic/hex cell)])
_FCC = np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
_BCC = np.array([[-0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.5, 0.5, -0.5]])
_CENTRING = {
    "fcc": np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]),
    "bcc": np.array([[0, 0, 0], [0.5, 0.5, 0.5]]),
    "sc": np.zeros((1, 3)),
}
_Q = 0.25
_EXAMPLE_DATA = {
    "Si": ("fcc", 5.431, [("Si", (0, 0, 0)), ("Si", (_Q, _Q, _Q))]),
    "C": ("fcc", 3.567, [("C", (0, 0, 0)), ("C", (_Q, _Q, _Q))]),
    "Ge": ("fcc", 5.658, [("Ge", (0, 0, 0)), ("Ge", (_Q, _Q, _Q))]),
    "GaAs": ("fcc", 5.653, [("Ga", (0, 0, 0)), ("As", (_Q, _Q, _Q))]),
    "NaCl": ("fcc", 5.640, [("Na", (0, 0, 0)), ("Cl", (0.5, 0.5, 0.5))]),
    "MgO": ("fcc", 4.212, [("Mg", (0, 0, 0)), ("O", (0.5, 0.5, 0.5))]),
    "LiF": ("fcc", 4.026, [("Li", (0, 0, 0)), ("F", (0.5, 0.5, 0.5))]),
    "Al": ("fcc", 4.050, [("Al", (0, 0, 0))]),
    "Cu": ("fcc", 3.615, [("Cu", (0, 0, 0))]),
    "Ni": ("fcc", 3.524, [("Ni", (0, 0, 0))]),
    "Fe": ("bcc", 2.867, [("Fe", (0, 0, 0))]),
    "BaTiO3": ("sc", 4.000, [("Ba", (0, 0, 0)), ("Ti", (0.5, 0.5, 0.5)), ("O", (0.5, 0.5, 0)),
                             ("O", (0.5, 0, 0.5)), ("O", (0, 0.5, 0.5))]),
    "graphene": ("hex", 2.46, None),
}
GRAPHENE_C = 20.0  # Å, c axis of the graphene example (vacuum ≈ 20 Å between sheets)

#: Names accepted by :func:`example` (case-insensitive; aliases in ``_EXAMPLE_ALIASES``).
EXAMPLES = tuple(_EXAMPLE_DATA)
_EXAMPLE_ALIASES = {"diamond": "C", "silicon": "Si", "germanium": "Ge", "aluminium": "Al", "aluminum": "Al",
                    "copper": "Cu", "iron": "Fe", "nickel": "Ni", "rocksalt": "NaCl"}

_CRC = "CRC Handbook of Chemistry and Physics (room temperature)"
_KITTEL = "C. Kittel, Introduction to Solid State Physics, 8th ed., ch. 1 (room temperature)"
#: Structure and the source of the experimental lattice constant of each example.
EXAMPLE_SOURCES = {
    "Si": f"diamond (Fd-3m), a = 5.431 Å; {_CRC}",
    "C": f"diamond (Fd-3m), a = 3.567 Å; {_KITTEL}",
    "Ge": f"diamond (Fd-3m), a = 5.658 Å; {_KITTEL}",
    "GaAs": f"zincblende (F-43m), a = 5.653 Å; {_CRC}",
    "NaCl": f"rocksalt (Fm-3m), a = 5.640 Å; {_CRC}",
    "MgO": f"rocksalt (Fm-3m), a = 4.212 Å; {_CRC}",
    "LiF": f"rocksalt (Fm-3m), a = 4.026 Å; {_CRC}",
    "Al": f"fcc (Fm-3m), a = 4.050 Å; {_KITTEL}",
    "Cu": f"fcc (Fm-3m), a = 3.615 Å; {_CRC}",
    "Ni": f"fcc (Fm-3m), a = 3.524 Å; {_CRC}",
    "Fe": f"bcc alpha-Fe (Im-3m), a = 2.867 Å; {_CRC}",
    "BaTiO3": "cubic perovskite (Pm-3m, the phase above T_C ≈ 393 K), a = 4.00 Å; "
              "G. H. Kwei et al., J. Phys. Chem. 97, 2368 (1993)",
    "graphene": "honeycomb sheet (P6/mmm as a 3D stack), a = 2.46 Å (in-plane constant of graphite, "
                f"{_KITTEL}); c = {GRAPHENE_C} Å of vacuum",
}


def _canonical_example(name) -> str | None:
    if not isinstance(name, str):
        return None
    key = name.strip()
    lower = {n.lower(): n for n in EXAMPLES}
    if key.lower() in lower:
        return lower[key.lower()]
    return _EXAMPLE_ALIASES.get(key.lower())


def is_example(name) -> bool:
    """True if ``name`` is a built-in example name or alias (case-insensitive)."""
    return _canonical_example(name) is not None


def example(name: str, conventional: bool = False) -> Crystal:
    """A built-in example crystal with its experimental lattice constant.

    Cubic-centred structures (diamond, zincblende, rocksalt, fcc, bcc) come as the
    primitive cell with lattice rows ``a/2 (0,1,1), (1,0,1), (1,1,0)`` (fcc) or
    ``a/2 (-1,1,1), (1,-1,1), (1,1,-1)`` (bcc), as in ASE; ``conventional=True``
    gives the cubic cell (8 atoms for Si). BaTiO3 (simple cubic) and graphene
    (hexagonal, ``a ∥ x``, 20 Å along c, sheet at z = c/2) have a single setting.

    Args:
        name: one of :data:`EXAMPLES` (case-insensitive) or an alias such as ``"diamond"``.
        conventional: return the conventional cubic cell instead of the primitive one.

    Raises:
        FileFormatError: unknown name (the message lists the examples).
    """
    key = _canonical_example(name)
    if key is None:
        raise FileFormatError(f"unknown example {name!r}; {_examples_hint()} (aliases: {', '.join(_EXAMPLE_ALIASES)})")
    kind, a, basis = _EXAMPLE_DATA[key]
    if kind == "hex":
        lattice = np.array([[a, 0.0, 0.0], [-a / 2, a * math.sqrt(3) / 2, 0.0], [0.0, 0.0, GRAPHENE_C]])
        return Crystal.create(["C", "C"], [[1 / 3, 2 / 3, 0.5], [2 / 3, 1 / 3, 0.5]], lattice)
    symbols = [s for s, _ in basis]
    pos = np.array([p for _, p in basis], dtype=float)  # in units of the cubic cell, i.e. cart / a
    if conventional or kind == "sc":
        t = _CENTRING[kind]
        frac = (pos[:, None, :] + t[None, :, :]).reshape(-1, 3) % 1.0
        nums = [s for s in symbols for _ in range(len(t))]
        return Crystal.create(nums, frac, a * np.eye(3))
    prim = {"fcc": _FCC, "bcc": _BCC}[kind]
    frac = pos @ np.linalg.inv(prim)
    frac = frac - np.floor(frac + 1e-12)
    return Crystal.create(symbols, frac, a * prim)
