"""Extended XYZ files with energies, forces and (optionally) stresses.

Used by ``mlearn_zuo2020`` (Zuo et al., J. Phys. Chem. A 124, 731 (2020):
periodic, forces in the per-atom array **``force``**) and the ``botnet_*``
molecular sets (Batatia et al., "The design space of E(3)-equivariant
atom-centered interatomic potentials" (BOTNet), 2022: non-periodic, forces in
``forces``). Parsing is done by ASE (``ase.io.read(..., format="extxyz")``).

Label sources, in order of preference:

* energy [eV]: the calculator result ``energy`` (ASE moves an ``energy=`` header
  key there), else ``info[energy_key]``;
* forces [eV/Å]: the per-atom array ``forces_key`` when given, else the
  calculator's ``forces``, else the arrays ``forces`` or ``force``;
* stress [GPa]: the calculator's ``stress`` (ASE Voigt order xx yy zz yz xz xy,
  eV/Å^3, ASE sign convention ``σ = (1/V) ∂E/∂ε`` = the difcrys convention),
  converted with ×160.218 GPa/(eV/Å^3); else a ``virial`` header entry
  ``W = −V σ`` [eV] (3×3 or 9 numbers), converted to ``σ = −W / V``.

Non-periodic frames (``pbc="F F F"``) keep ``pbc=False`` in the data set. A
Crystal always needs a lattice: the lattice given in the file is kept (the
BOTNet files carry a 50 Å cube); frames without a lattice (the isolated-atom
files) get a cubic box of side ``extent + box_vacuum`` (default 20 Å of vacuum,
so periodic images are at least 20 Å apart). Cartesian positions are kept
exactly as in the file (fractional coordinates are not wrapped), so forces
stay aligned with positions.
"""

from __future__ import annotations

import os

import numpy as np

from difcrys.crystal import MIN_DISTANCE_ANG
from difcrys.data._common import DatasetError, check_file, make_crystals
from difcrys.data.dataset import Dataset
from difcrys.errors import FileFormatError, StructureError
from difcrys.units import EV_PER_ANG3_GPA

DEFAULT_BOX_VACUUM = 20.0  # Å between periodic images of a molecule without a lattice


def molecule_box(positions: np.ndarray, vacuum: float = DEFAULT_BOX_VACUUM) -> np.ndarray:
    """Cubic lattice rows [Å] of side ``max extent + vacuum`` for a non-periodic molecule."""
    pos = np.asarray(positions, float).reshape(-1, 3)
    extent = float(np.max(np.ptp(pos, axis=0))) if len(pos) else 0.0
    return np.eye(3) * (extent + vacuum)


def _voigt_ase_to_3x3(v) -> np.ndarray:
    v = np.asarray(v, float).reshape(-1)
    if v.shape == (9,):
        return v.reshape(3, 3)
    xx, yy, zz, yz, xz, xy = v
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def read_extxyz(path, *, energy_key: str = "energy", forces_key: str | None = None,
                validate: bool = True, min_distance: float = MIN_DISTANCE_ANG,
                box_vacuum: float = DEFAULT_BOX_VACUUM, name: str | None = None) -> Dataset:
    """Read all frames of an extended XYZ file into a :class:`Dataset`.

    Args:
        path: the ``.xyz`` / ``.extxyz`` file.
        energy_key: header key of the total energy [eV] when it is not a calculator result.
        forces_key: per-atom array holding the forces [eV/Å] (default: ``forces`` or ``force``).
        validate: check every structure.
        min_distance: overlap threshold [Å]; the dimer curves of ``botnet_ethanol/test_dimers.xyz``
            start at 0.35 Å and need a smaller value (e.g. 0.1).
        box_vacuum: vacuum [Å] of the cubic box given to frames without a lattice.
        name: dataset name (default ``<folder>/<file>``).

    Returns:
        Dataset with ``energy``, ``forces``, ``stress`` when present in every frame
        (None when absent from all), ``pbc`` per frame, numeric header entries present
        in every frame as ``properties`` (e.g. ``dihedral_angle``, ``OH_dist``,
        ``distance``, ``dihedrals [N, 3]``) and the other header entries in ``metadata``
        (e.g. ``config_type``).

    Raises:
        FileFormatError: missing or unreadable file.
        DatasetError: no frames; a label present in some frames only; NaN; force shape mismatch.
        StructureError: a frame fails the structure checks (message names file and frame).
    """
    from ase.io import read

    p = check_file(path)
    name = name or os.path.join(os.path.basename(os.path.dirname(os.path.abspath(p))), os.path.basename(p))
    try:
        frames = read(p, index=":", format="extxyz")
    except Exception as e:
        raise FileFormatError(f"{p}: not a readable extended XYZ file ({type(e).__name__}: {e})") from e
    if len(frames) == 0:
        raise DatasetError(f"{p}: empty dataset (no frames)")

    raw, energies, forces, stresses, pbcs = [], [], [], [], []
    infos = []
    for k, at in enumerate(frames):
        where = f"{p}: frame {k}"
        res = dict(at.calc.results) if at.calc is not None else {}
        pos = np.asarray(at.positions, float)
        pbc = np.asarray(at.pbc, bool)
        cell = np.asarray(at.cell[:], float)
        if abs(np.linalg.det(cell)) < 1e-8:
            if pbc.any():
                raise StructureError(f"{where}: periodic frame (pbc={pbc.tolist()}) without a valid lattice")
            cell = molecule_box(pos, box_vacuum)
        raw.append((np.asarray(at.numbers), pos @ np.linalg.inv(cell), cell))
        pbcs.append(pbc)
        # energy
        e = res.get("energy", res.get("free_energy"))
        if e is None and energy_key in at.info:
            e = at.info[energy_key]
        energies.append(None if e is None else float(e))
        # forces
        if forces_key is not None:
            f = at.arrays.get(forces_key, res.get(forces_key))
        else:
            f = res.get("forces")
            if f is None:
                f = at.arrays.get("forces", at.arrays.get("force"))
        forces.append(None if f is None else np.asarray(f, float))
        # stress
        s = res.get("stress")
        if s is not None:
            stresses.append(_voigt_ase_to_3x3(s) * EV_PER_ANG3_GPA)
        elif "virial" in at.info:
            vol = abs(np.linalg.det(cell))
            stresses.append(-_voigt_ase_to_3x3(at.info["virial"]) / vol * EV_PER_ANG3_GPA)
        else:
            stresses.append(None)
        infos.append({key: v for key, v in at.info.items() if key != energy_key})

    crystals, _ = make_crystals([r[0] for r in raw], [r[1] for r in raw], [r[2] for r in raw],
                                validate=validate, min_distance=min_distance,
                                wheres=[f"{p}: frame {k}" for k in range(len(raw))])

    def collect(field, values):
        have = [v is not None for v in values]
        if not any(have):
            return None
        if not all(have):
            k = have.index(False)
            raise DatasetError(f"{p}: frame {k} has no {field} while other frames do")
        return values

    energy = collect("energy", energies)
    force_list = collect("forces", forces)
    stress_list = collect("stress", stresses)
    properties, metadata = {}, {}
    keys = sorted({key for inf in infos for key in inf})
    for key in keys:
        vals = [inf.get(key) for inf in infos]
        if all(v is not None for v in vals):
            arrs = [np.asarray(v) for v in vals]
            if all(a.dtype.kind in "biuf" for a in arrs) and len({a.shape for a in arrs}) == 1:
                properties[key] = np.stack(arrs).astype(np.float64 if arrs[0].dtype.kind == "f" else np.int64)
                continue
        metadata[key] = [None if v is None else (v if isinstance(v, str) else str(v)) for v in vals]
    units = {"energy": "eV", "forces": "eV/Å", "stress": "GPa"}
    ids = [f"{os.path.basename(p)}:{k}" for k in range(len(frames))]
    return Dataset(
        crystals=crystals,
        energy=None if energy is None else np.array(energy),
        forces=force_list,
        stress=None if stress_list is None else np.stack(stress_list),
        properties=properties,
        pbc=np.array(pbcs),
        ids=ids,
        metadata=metadata,
        units=units,
        name=name,
    )
