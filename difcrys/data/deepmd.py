"""DeePMD-kit ``npy`` systems (Wang et al., Comput. Phys. Commun. 228, 178 (2018)).

A *system* folder holds ``type.raw`` (one integer type per atom, the same for
every frame), ``type_map.raw`` (element symbol of each type) and one or more
``set.*`` folders with ``box.npy [F, 9]`` (lattice rows ax ay az bx by bz cx cy
cz, Å), ``coord.npy [F, 3n]`` (cartesian, Å), ``energy.npy [F]`` (eV),
``force.npy [F, 3n]`` (eV/Å) and optionally ``virial.npy [F, 9]`` (eV). A
``nopbc`` file marks a non-periodic system.

DeePMD's virial is ``W = −V σ`` in eV (with ``σ = (1/V) ∂E/∂ε``, the difcrys
sign), so ``σ = −W / V``, converted to GPa.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from difcrys.crystal import MIN_DISTANCE_ANG
from difcrys.data._common import DatasetError, check_file, make_crystals, symbols_to_numbers
from difcrys.data.dataset import Dataset
from difcrys.data.extxyz import molecule_box
from difcrys.errors import FileFormatError
from difcrys.units import EV_PER_ANG3_GPA


def _is_system(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "type.raw"))


def _load(path: str, where: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:
        raise FileFormatError(f"{where}: cannot read {path} ({type(e).__name__}: {e})") from e


def read_deepmd_system(folder, *, validate: bool = True, min_distance: float = MIN_DISTANCE_ANG,
                       name: str | None = None) -> Dataset:
    """Read one DeePMD system folder (``type.raw`` + ``set.*``); see :func:`read_deepmd`."""
    folder = check_file(folder)
    name = name or os.path.basename(os.path.normpath(folder))
    if not _is_system(folder):
        raise FileFormatError(f"{folder}: not a DeePMD system (no type.raw)")
    types = np.loadtxt(os.path.join(folder, "type.raw"), dtype=int, ndmin=1)
    tm_path = os.path.join(folder, "type_map.raw")
    if not os.path.isfile(tm_path):
        raise FileFormatError(f"{folder}: no type_map.raw (element of each type is unknown)")
    with open(tm_path) as fh:
        type_map = fh.read().split()
    if types.min() < 0 or types.max() >= len(type_map):
        raise FileFormatError(f"{folder}: type.raw has types up to {types.max()} but type_map.raw names "
                              f"only {len(type_map)} elements {type_map}")
    numbers = symbols_to_numbers([type_map[t] for t in types], where=folder)
    n = len(numbers)
    periodic = not os.path.exists(os.path.join(folder, "nopbc"))
    sets = sorted(glob.glob(os.path.join(folder, "set.*")))
    if not sets:
        raise DatasetError(f"{folder}: empty dataset (no set.* folders)")
    raw, wheres, energy, forces, stress, ids = [], [], [], [], [], []
    has_virial = None
    for sdir in sets:
        where = sdir
        for req in ("box.npy", "coord.npy", "energy.npy", "force.npy"):
            if not os.path.isfile(os.path.join(sdir, req)):
                raise FileFormatError(f"{sdir}: missing {req}")
        box = _load(os.path.join(sdir, "box.npy"), where).astype(np.float64)
        coord = _load(os.path.join(sdir, "coord.npy"), where).astype(np.float64)
        ene = _load(os.path.join(sdir, "energy.npy"), where).astype(np.float64).reshape(-1)
        frc = _load(os.path.join(sdir, "force.npy"), where).astype(np.float64)
        vpath = os.path.join(sdir, "virial.npy")
        vir = _load(vpath, where).astype(np.float64) if os.path.isfile(vpath) else None
        if has_virial is None:
            has_virial = vir is not None
        elif has_virial != (vir is not None):
            raise DatasetError(f"{sdir}: virial.npy present in some sets of {folder} but not in others")
        nf = len(ene)
        shapes = {"box.npy": (box, 9), "coord.npy": (coord, 3 * n), "force.npy": (frc, 3 * n)}
        if vir is not None:
            shapes["virial.npy"] = (vir, 9)
        for fname, (arr, width) in shapes.items():
            if arr.reshape(len(arr), -1).shape != (nf, width):
                raise DatasetError(f"{sdir}: {fname} has shape {arr.shape}, expected ({nf}, {width}) "
                                   f"for {nf} frames of {n} atoms")
        for f in range(nf):
            lat = box[f].reshape(3, 3)
            pos = coord[f].reshape(n, 3)
            if not periodic and not abs(np.linalg.det(lat)) > 1e-8:
                lat = molecule_box(pos)  # non-periodic system without a usable box
            frac = pos @ np.linalg.inv(lat) if np.all(np.isfinite(lat)) and abs(np.linalg.det(lat)) > 1e-8 \
                else np.full((n, 3), np.nan)
            raw.append((frac, lat))
            wheres.append(f"{sdir}: frame {f}")
            energy.append(ene[f])
            forces.append(frc[f].reshape(n, 3))
            if vir is not None:
                vol = abs(np.linalg.det(lat))
                stress.append(-vir[f].reshape(3, 3) / vol * EV_PER_ANG3_GPA)
            ids.append(f"{name}/{os.path.basename(sdir)}/{f}")
    crystals, _ = make_crystals([numbers] * len(raw), [r[0] for r in raw], [r[1] for r in raw],
                                validate=validate, min_distance=min_distance, wheres=wheres)
    return Dataset(crystals=crystals, energy=np.array(energy), forces=forces,
                   stress=np.stack(stress) if has_virial else None,
                   pbc=np.tile(np.array([periodic] * 3), (len(crystals), 1)), ids=ids,
                   units={"energy": "eV", "forces": "eV/Å", "stress": "GPa"}, name=name)


def read_deepmd(path, **kw) -> Dataset:
    """Read a DeePMD system folder, or every system below a folder (e.g. ``deepmd_water``).

    Args:
        path: a system folder (with ``type.raw``) or a folder whose sub-folders
            (searched recursively, in sorted order) are systems.
        **kw: ``validate``, ``min_distance`` (see :func:`read_deepmd_system`).

    Returns:
        Dataset with ``energy [eV]``, ``forces [eV/Å]``, ``stress [GPa]`` when
        ``virial.npy`` exists; ids ``<system>/<set>/<frame>``. The stored arrays are
        float32 (DeePMD example data) and are converted to float64.

    Raises:
        FileFormatError: missing folder/files, unknown type, unreadable npy.
        DatasetError: no systems or sets, inconsistent array shapes, NaN.
    """
    p = check_file(path)
    if _is_system(p):
        return read_deepmd_system(p, **kw)
    systems = sorted(os.path.dirname(t) for t in glob.glob(os.path.join(p, "**", "type.raw"), recursive=True))
    if not systems:
        raise DatasetError(f"{p}: empty dataset (no DeePMD system: no type.raw below this folder)")
    parts = [read_deepmd_system(s, name=os.path.relpath(s, p), **kw) for s in systems]
    return Dataset.concatenate(parts, name=os.path.basename(os.path.normpath(p)))
