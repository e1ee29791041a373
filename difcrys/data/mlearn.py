"""The original mlearn JSON files (with stresses) of Zuo et al. (2020).

Reference: Y. Zuo et al., "Performance and Cost Assessment of Machine Learning
Interatomic Potentials", J. Phys. Chem. A 124, 731 (2020);
github.com/materialsvirtuallab/mlearn (``data/<El>/{training,test}.json``).

Each record holds a pymatgen ``Structure`` dict, ``outputs.energy`` (total
energy, eV), ``outputs.forces`` (eV/Å) and ``outputs.virial_stress``
(6 numbers), plus ``group`` (Elastic, Surface, Vacancy, AIMD-NVT ...) and
``description``.

``virial_stress`` — units, sign and component order, **determined from the data**
(see ``tests/test_data.py``):

* **units: kbar.** The uniaxially strained Si cells (mode 0, ε_xx = ±0.02) have
  ``virial_stress[0] = +31.6 / −29.5``, i.e. ≈ C11·ε with C11(PBE Si) ≈ 153 GPa
  = 1530 kbar.
* **sign: VASP's pressure sign** (the ``in kB`` line of OUTCAR): positive for a
  compressed cell. Difcrys uses ``σ = (1/V) ∂E/∂ε`` (positive = tensile), so
  ``σ = −virial_stress``. Verified by the work theorem ``ΔE = ∫ V σ : dε``
  along the strained Si and Ge series (agreement within a few per cent; the
  opposite sign would be off by 200 %).
* **component order differs between elements.** The first three are always
  xx, yy, zz. For Si, Ge, Li the shear part is VASP order **xy, yz, zx**; for Cu,
  Ni, Mo it is **xy, zx, yz** (LAMMPS order xy, xz, yz). Found from the
  "Elastic" shear frames: the stress component that responds to a cell sheared
  in the yz (zx) plane sits at index 4 (5) for Si/Ge/Li and at index 5 (4) for
  Cu/Ni/Mo. :data:`SHEAR_ORDER` holds this table.

Conversion used here: ``σ [GPa] = −0.1 · V(virial_stress)`` where ``V(·)``
builds the symmetric 3×3 tensor with the element's component order.
"""

from __future__ import annotations

import json
import os

import numpy as np

from difcrys.crystal import MIN_DISTANCE_ANG
from difcrys.data._common import DatasetError, check_file, make_crystals, symbols_to_numbers
from difcrys.data.dataset import Dataset
from difcrys.errors import ConfigError, FileFormatError
from difcrys.units import KBAR_GPA

#: Order of the three shear components (indices 3, 4, 5) of ``virial_stress`` per element.
SHEAR_ORDER = {
    "Si": ("xy", "yz", "zx"),
    "Ge": ("xy", "yz", "zx"),
    "Li": ("xy", "yz", "zx"),
    "Cu": ("xy", "zx", "yz"),
    "Ni": ("xy", "zx", "yz"),
    "Mo": ("xy", "zx", "yz"),
}
_NAMED_ORDERS = {"vasp": ("xy", "yz", "zx"), "lammps": ("xy", "zx", "yz")}
_IDX = {"xy": (0, 1), "yz": (1, 2), "zx": (2, 0)}


def virial_stress_to_gpa(v, shear_order=("xy", "yz", "zx")) -> np.ndarray:
    """mlearn ``virial_stress`` (6 numbers, kbar, pressure sign) → ``σ [3, 3]`` in GPa, ``σ = (1/V) ∂E/∂ε``.

    Args:
        v: ``[6]`` = xx, yy, zz, then the three shears in ``shear_order``.
        shear_order: names of components 3, 4, 5 (see :data:`SHEAR_ORDER`).
    """
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    if v.shape != (6,):
        raise FileFormatError(f"virial_stress must have 6 components, got {v.shape[0]}")
    s = np.diag(v[:3])
    for name, val in zip(shear_order, v[3:]):
        i, j = _IDX[name]
        s[i, j] = s[j, i] = val
    return -KBAR_GPA * s


def _structure(d: dict, where: str):
    try:
        lattice = np.asarray(d["lattice"]["matrix"], dtype=np.float64)
        sites = d["sites"]
        symbols = []
        for s in sites:
            sp = s["species"]
            if len(sp) != 1 or abs(float(sp[0].get("occu", 1)) - 1) > 1e-6:
                raise FileFormatError(f"{where}: disordered site {s} cannot be a Crystal")
            symbols.append(sp[0]["element"])
        frac = np.asarray([s["abc"] for s in sites], dtype=np.float64).reshape(-1, 3)
    except (KeyError, TypeError, IndexError) as e:
        raise FileFormatError(f"{where}: malformed structure record ({type(e).__name__}: {e})") from e
    return symbols, frac, lattice


def read_mlearn_json(path, *, shear_order=None, validate: bool = True,
                     min_distance: float = MIN_DISTANCE_ANG, name: str | None = None) -> Dataset:
    """Read an mlearn ``training.json`` / ``test.json`` into a :class:`Dataset`.

    Args:
        path: the JSON file (a list of records).
        shear_order: order of the shear components of ``virial_stress``: ``"vasp"``
            (xy, yz, zx), ``"lammps"`` (xy, zx, yz), a 3-tuple, or None to use
            :data:`SHEAR_ORDER` for the record's ``element`` (ConfigError for an
            element not in the table).
        validate, min_distance: structure checks.
        name: dataset name.

    Returns:
        Dataset with ``energy`` [eV], ``forces`` [eV/Å], ``stress`` [GPa]
        (``σ = −0.1 · virial_stress`` as a 3×3 tensor; see the module docstring),
        ``metadata`` ``group``, ``element``, ``tag``, and ids = ``description``.

    Raises:
        FileFormatError: missing/unreadable file or malformed record.
        DatasetError: empty list, NaN, force shape mismatch.
        ConfigError: unknown element and no ``shear_order``.
    """
    p = check_file(path)
    name = name or os.path.basename(p)
    try:
        with open(p) as fh:
            records = json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise FileFormatError(f"{p}: not a readable JSON file ({type(e).__name__}: {e})") from e
    if not isinstance(records, list):
        raise FileFormatError(f"{p}: expected a JSON list of records, got {type(records).__name__}")
    if len(records) == 0:
        raise DatasetError(f"{p}: empty dataset (no records)")
    if isinstance(shear_order, str):
        if shear_order.lower() not in _NAMED_ORDERS:
            raise ConfigError(f"shear_order must be 'vasp', 'lammps' or a 3-tuple, got {shear_order!r}")
        shear_order = _NAMED_ORDERS[shear_order.lower()]
    raw, wheres, energy, forces, stress, ids = [], [], [], [], [], []
    meta = {"group": [], "element": [], "tag": []}
    for k, r in enumerate(records):
        where = f"{p}: record {k}"
        try:
            out = r["outputs"]
            e = float(out["energy"])
            f = np.asarray(out["forces"], dtype=np.float64)
            vs = out.get("virial_stress")
        except (KeyError, TypeError, ValueError) as err:
            raise FileFormatError(f"{where}: malformed outputs ({type(err).__name__}: {err})") from err
        symbols, frac, lattice = _structure(r.get("structure", {}), where)
        numbers = symbols_to_numbers(symbols, where)
        raw.append((numbers, frac, lattice))
        wheres.append(where)
        energy.append(e)
        forces.append(f)
        element = r.get("element", "")
        order = shear_order
        if order is None:
            if element not in SHEAR_ORDER:
                raise ConfigError(f"{where}: element {element!r} has no known virial_stress component "
                                  f"order; pass shear_order='vasp' or 'lammps'")
            order = SHEAR_ORDER[element]
        stress.append(None if vs is None else virial_stress_to_gpa(vs, order))
        ids.append(str(r.get("description", k)))
        meta["group"].append(str(r.get("group", "")))
        meta["element"].append(str(element))
        meta["tag"].append(str(r.get("tag", "")))
    crystals, _ = make_crystals([r[0] for r in raw], [r[1] for r in raw], [r[2] for r in raw],
                                validate=validate, min_distance=min_distance, wheres=wheres)
    have = [s is not None for s in stress]
    if any(have) and not all(have):
        raise DatasetError(f"{p}: record {have.index(False)} has no virial_stress while others do")
    return Dataset(crystals=crystals, energy=np.array(energy), forces=forces,
                   stress=np.stack(stress) if all(have) else None, ids=ids, metadata=meta,
                   units={"energy": "eV", "forces": "eV/Å", "stress": "GPa"}, name=name)
