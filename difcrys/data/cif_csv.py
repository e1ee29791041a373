"""CDVAE / DiffCSP style CSV files: one CIF string per row plus property columns.

Used by ``perov_5``, ``carbon_24``, ``mp_20`` and ``jarvis_supercon`` (Xie et al.,
"Crystal Diffusion Variational Autoencoder", ICLR 2022; Jiao et al., DiffCSP,
NeurIPS 2023). The CIFs in these files are written by pymatgen in space group
P1 (one ``x, y, z`` operation, full occupancy). They are parsed by a small
dedicated parser (~40 µs per row instead of ~5 ms for
``pymatgen.core.Structure.from_str``); any CIF it does not recognise as such a
P1 file (several symmetry operations, partial occupancy, missing columns) is
handed to pymatgen, which applies the symmetry. The tests check the fast path
against pymatgen on rows of every file.

Conventions of the returned crystals:

* lattice rows from the CIF cell parameters in the difcrys standard
  orientation (``a`` along x, ``b`` in the xy plane,
  :func:`difcrys.crystal.lattice_from_parameters`), which is always
  right-handed; a left-handed matrix from the pymatgen path is fixed by
  swapping vectors 0 and 1 (see :mod:`difcrys.data._common`);
* fractional coordinates wrapped into [0, 1) (the files contain values such as
  −0.39 or 1.06; pymatgen and ASE wrap the same way);
* no Niggli or primitive reduction (CDVAE's ``niggli=True`` preprocessing is
  not applied: the cell is the one in the file).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from difcrys.crystal import MIN_DISTANCE_ANG, lattice_from_parameters
from difcrys.data._common import DatasetError, check_file, make_crystal, make_crystals, symbols_to_numbers
from difcrys.data.dataset import Dataset
from difcrys.errors import FileFormatError, StructureError

# Units of the known label columns (Castelli 2012 perovskites, AIRSS carbon, MP, JARVIS).
COLUMN_UNITS = {
    "heat_all": "eV/atom",
    "heat_ref": "eV/atom",
    "dir_gap": "eV",
    "ind_gap": "eV",
    "energy_per_atom": "eV/atom",
    "formation_energy_per_atom": "eV/atom",
    "band_gap": "eV",
    "e_above_hull": "eV/atom",
    "spacegroup.number": "1",
    "prop": "K (prop = -Tc for jarvis_supercon)",
    "tc_k": "K",
}

_ID_COLUMNS = ("material_id", "mp_id", "id")
_SKIP_COLUMNS = ("cif", "Unnamed: 0", "")


def _num(tok: str) -> float:
    """CIF number: strips a standard uncertainty ``1.234(5)``."""
    p = tok.find("(")
    return float(tok[:p] if p >= 0 else tok)


def parse_p1_cif(text: str):
    """Parse a pymatgen-written P1 CIF without symmetry expansion.

    Returns:
        ``(symbols [n], frac [n, 3], (a, b, c, alpha, beta, gamma))``, or None when
        the CIF is not a plain P1 file (the caller then uses pymatgen).
    """
    cell = {}
    lines = text.splitlines()
    n = len(lines)
    k = 0
    ops = []
    atom_cols: list[str] = []
    atom_rows: list[list[str]] = []
    while k < n:
        s = lines[k].strip()
        if s.startswith("_cell_length_") or s.startswith("_cell_angle_"):
            parts = s.split()
            if len(parts) < 2:
                return None
            cell[parts[0]] = _num(parts[1])
            k += 1
            continue
        if s == "loop_":
            k += 1
            cols = []
            while k < n and lines[k].strip().startswith("_"):
                cols.append(lines[k].strip().split()[0])
                k += 1
            rows = []
            while k < n:
                t = lines[k].strip()
                if not t or t == "loop_" or t.startswith("_") or t.startswith("data_"):
                    break
                rows.append(t)
                k += 1
            if any(c in ("_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz") for c in cols):
                ops.extend(rows)
            elif any(c.startswith("_atom_site_fract_") for c in cols):
                atom_cols = cols
                atom_rows = [r.split() for r in rows]
            continue
        k += 1
    keys = ["_cell_length_a", "_cell_length_b", "_cell_length_c",
            "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma"]
    if any(key not in cell for key in keys) or not atom_rows:
        return None
    # symmetry: only the identity is handled here
    if len(ops) > 1:
        return None
    if len(ops) == 1 and "x, y, z" not in ops[0].replace("'", "").replace("  ", " ").lower():
        return None
    try:
        ix = atom_cols.index("_atom_site_fract_x")
        iy = atom_cols.index("_atom_site_fract_y")
        iz = atom_cols.index("_atom_site_fract_z")
        it = atom_cols.index("_atom_site_type_symbol")
    except ValueError:
        return None
    io = atom_cols.index("_atom_site_occupancy") if "_atom_site_occupancy" in atom_cols else None
    symbols, frac = [], []
    for r in atom_rows:
        if len(r) != len(atom_cols):
            return None
        if io is not None and abs(_num(r[io]) - 1.0) > 1e-6:
            return None
        symbols.append(r[it])
        frac.append((_num(r[ix]), _num(r[iy]), _num(r[iz])))
    return symbols, np.array(frac, dtype=np.float64), tuple(cell[key] for key in keys)


def _parse_with_pymatgen(text: str, where: str):
    from pymatgen.core import Structure

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Structure.from_str(text, fmt="cif")
    except Exception as e:  # pymatgen raises many types
        raise FileFormatError(f"{where}: unreadable CIF ({type(e).__name__}: {e})") from e
    if not s.is_ordered:
        raise FileFormatError(f"{where}: disordered structure (partial occupancies) cannot be a Crystal")
    symbols = [site.specie.symbol for site in s]
    return symbols, np.asarray(s.frac_coords, float), np.asarray(s.lattice.matrix, float)


def _parse_cif(text: str, where: str):
    """CIF string → (atomic numbers, frac, lattice rows) via the fast path or pymatgen."""
    if not isinstance(text, str) or not text.strip():
        raise FileFormatError(f"{where}: empty CIF string")
    parsed = parse_p1_cif(text)
    if parsed is not None:
        symbols, frac, params = parsed
        try:
            lattice = lattice_from_parameters(*params)
        except StructureError as e:
            raise StructureError(f"{where}: {e}") from None
    else:
        symbols, frac, lattice = _parse_with_pymatgen(text, where)
    return symbols_to_numbers(symbols, where), frac, lattice


def cif_to_crystal(text: str, *, validate: bool = True, min_distance: float = MIN_DISTANCE_ANG,
                   where: str = "CIF"):
    """One CIF string → host-side :class:`~difcrys.crystal.Crystal` (see module docstring).

    Raises:
        FileFormatError: unreadable or disordered CIF.
        StructureError: the structure fails the checks (message names ``where``).
    """
    numbers, frac, lattice = _parse_cif(text, where)
    crystal, _ = make_crystal(numbers, frac, lattice, validate=validate, min_distance=min_distance,
                              wrap=True, where=where)
    return crystal


def read_cif_csv(path, label_columns=None, *, validate: bool = True,
                 min_distance: float = MIN_DISTANCE_ANG, name: str | None = None) -> Dataset:
    """Read a CDVAE-style CSV (one CIF per row) into a :class:`Dataset`.

    Args:
        path: the ``.csv`` file.
        label_columns: numeric columns to keep as ``properties`` (default: every
            numeric column except the unnamed index column). Units are recorded
            in ``dataset.units`` for the known columns (:data:`COLUMN_UNITS`):
            ``heat_ref``/``heat_all`` [eV/atom] and ``dir_gap``/``ind_gap`` [eV]
            (perov_5), ``energy_per_atom`` [eV/atom] (carbon_24),
            ``formation_energy_per_atom`` [eV/atom], ``band_gap`` [eV],
            ``e_above_hull`` [eV/atom] (mp_20), ``prop`` = −Tc [K] (jarvis_supercon,
            see :func:`read_jarvis_supercon` for ``tc_k``).
        validate: check every structure (NaN, overlaps closer than ``min_distance`` Å).
        min_distance: overlap threshold [Å].
        name: dataset name (default ``<folder>/<file>``).

    Returns:
        Dataset with ``ids`` from ``material_id`` and the string columns
        (``formula``, ``pretty_formula``, ``elements`` ...) in ``metadata``.

    Raises:
        FileFormatError: missing file, no ``cif`` column, unknown label column, unreadable CIF.
        DatasetError: no rows, or NaN in a label column (names row and column).
    """
    import pandas as pd

    p = check_file(path)
    name = name or os.path.join(os.path.basename(os.path.dirname(os.path.abspath(p))), os.path.basename(p))
    try:
        df = pd.read_csv(p)
    except Exception as e:
        raise FileFormatError(f"{p}: not a readable CSV ({type(e).__name__}: {e})") from e
    if "cif" not in df.columns:
        raise FileFormatError(f"{p}: no 'cif' column (columns: {list(df.columns)})")
    if len(df) == 0:
        raise DatasetError(f"{p}: empty dataset (no rows)")
    id_col = next((c for c in _ID_COLUMNS if c in df.columns), None)
    ids = [str(x) for x in df[id_col]] if id_col else [str(k) for k in range(len(df))]
    numeric = [c for c in df.columns
               if c not in _SKIP_COLUMNS and c != id_col and pd.api.types.is_numeric_dtype(df[c])]
    if label_columns is None:
        label_columns = numeric
    else:
        label_columns = list(label_columns)
        for c in label_columns:
            if c not in df.columns:
                raise FileFormatError(f"{p}: no column {c!r} (columns: {list(df.columns)})")
            if c not in numeric:
                raise FileFormatError(f"{p}: column {c!r} is not numeric")
    properties = {}
    for c in label_columns:
        v = df[c].to_numpy()
        v = v.astype(np.int64) if v.dtype.kind in "iu" else v.astype(np.float64)
        if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
            r = int(np.argwhere(~np.isfinite(v))[0][0])
            raise DatasetError(f"{p}: row {r} ({ids[r]}): NaN or infinite value in column '{c}'")
        properties[c] = v
    metadata = {c: [str(x) for x in df[c]] for c in df.columns
                if c not in _SKIP_COLUMNS and c != id_col and c not in numeric}
    wheres = [f"{p}: row {r} ({ids[r]})" for r in range(len(df))]
    parsed = [_parse_cif(text, wheres[r]) for r, text in enumerate(df["cif"])]
    crystals, _ = make_crystals([t[0] for t in parsed], [t[1] for t in parsed], [t[2] for t in parsed],
                                validate=validate, min_distance=min_distance, wrap=True, wheres=wheres)
    units = {c: COLUMN_UNITS[c] for c in label_columns if c in COLUMN_UNITS}
    return Dataset(crystals=crystals, properties=properties, ids=ids, metadata=metadata, units=units, name=name)


def read_jarvis_supercon(path, **kw) -> Dataset:
    """:func:`read_cif_csv` for ``jarvis_supercon`` plus ``properties["tc_k"] = −prop``.

    In the CDVAE ``supercon`` files (JARVIS electron–phonon superconductors,
    Choudhary & Garrity, npj Comput. Mater. 8, 244 (2022)) the column ``prop``
    holds **−Tc** in K (so that minimising ``prop`` maximises Tc);
    ``tc_k`` is the critical temperature Tc ≥ 0 [K].
    """
    ds = read_cif_csv(path, **kw)
    if "prop" not in ds.properties:
        raise FileFormatError(f"{path}: no 'prop' column; not a jarvis_supercon file")
    tc = -ds.properties["prop"].astype(np.float64)
    tc = np.where(tc == 0, 0.0, tc)  # -0.0 → 0.0
    ds.properties["tc_k"] = tc
    ds.units["tc_k"] = "K"
    return ds

