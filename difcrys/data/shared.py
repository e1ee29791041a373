"""Locate the shared data folder and load its sets by name.

The real data sets live outside the repository in ``../shared/data`` (relative
to the repository root) or wherever the ``DIFCRYS_DATA`` environment variable
points. Its ``README.md`` lists the sets; :func:`load_shared` dispatches a
folder name to the right reader.
"""

from __future__ import annotations

import os
import pathlib

from difcrys.errors import FileFormatError

_CSV_SETS = ("perov_5", "carbon_24", "mp_20_xrd_subset", "jarvis_supercon")
_XYZ_SETS = ("mlearn_zuo2020", "botnet_acac", "botnet_ethanol", "botnet_3BPA")


def shared_data_dir() -> pathlib.Path:
    """The shared data folder: ``$DIFCRYS_DATA``, else ``<repo root>/../shared/data``.

    Raises:
        FileFormatError: the folder does not exist (message says how to set it).
    """
    env = os.environ.get("DIFCRYS_DATA")
    if env:
        p = pathlib.Path(env).expanduser().resolve()
        source = "DIFCRYS_DATA"
    else:
        root = pathlib.Path(__file__).resolve().parents[2]
        p = (root.parent / "shared" / "data").resolve()
        source = "the default ../shared/data next to the repository"
    if not p.is_dir():
        raise FileFormatError(f"shared data folder not found: {p} (from {source}); "
                              "set DIFCRYS_DATA to the folder holding perov_5/, mlearn_zuo2020/, ...")
    return p


def _parts(folder: pathlib.Path, suffix: str) -> list[str]:
    return sorted(f.name[: -len(suffix)] for f in folder.iterdir() if f.name.endswith(suffix))


def load_shared(name: str, part: str | None = None, **kw):
    """Load a shared data set by folder name and part (file stem).

    Examples: ``load_shared("perov_5", "test")``, ``load_shared("mlearn_zuo2020", "Si_train")``,
    ``load_shared("mlearn_json_with_stress", "Si_training")``, ``load_shared("deepmd_water")``,
    ``load_shared("botnet_ethanol", "test_dimers")``, ``load_shared("deeptb_si64_hamiltonian")``.

    Returns:
        a :class:`~difcrys.data.Dataset`, or a :class:`~difcrys.data.HamiltonianData`
        for ``deeptb_si64_hamiltonian``. ``jarvis_supercon`` includes ``tc_k``.

    Raises:
        FileFormatError: unknown set or part (the message lists the available ones).
    """
    from difcrys.data.cif_csv import read_cif_csv, read_jarvis_supercon
    from difcrys.data.deepmd import read_deepmd
    from difcrys.data.extxyz import read_extxyz
    from difcrys.data.hamiltonian import read_hamiltonian_h5
    from difcrys.data.mlearn import read_mlearn_json

    root = shared_data_dir()
    folder = root / name
    if not folder.is_dir():
        known = sorted(d.name for d in root.iterdir() if d.is_dir())
        raise FileFormatError(f"unknown shared data set {name!r}; available: {known}")

    def pick(suffix):
        parts = _parts(folder, suffix)
        if part not in parts:
            raise FileFormatError(f"{name}: choose part= one of {parts}, got {part!r}")
        return folder / f"{part}{suffix}"

    if name in _CSV_SETS:
        path = pick(".csv")
        return read_jarvis_supercon(path, **kw) if name == "jarvis_supercon" else read_cif_csv(path, **kw)
    if name in _XYZ_SETS or name.startswith("botnet_"):
        path = pick(".xyz")
        if part == "test_dimers":
            kw.setdefault("min_distance", 0.1)  # dissociation curves start at 0.35 Å
        return read_extxyz(path, **kw)
    if name == "mlearn_json_with_stress":
        return read_mlearn_json(pick(".json"), **kw)
    if name == "deepmd_water":
        return read_deepmd(folder if part is None else folder / part, **kw)
    if name == "deeptb_si64_hamiltonian":
        return read_hamiltonian_h5(folder, **kw)
    raise FileFormatError(f"no reader registered for shared data set {name!r}")
