"""Crystal symmetry through spglib: space groups, standard cells, k-point meshes, band paths.

Host-side code (concrete arrays, never traced by JAX). spglib's cell convention
matches difcrys': lattice vectors are the **rows** of ``lattice`` (Å),
positions are fractional. spglib 2.x returns dataclass-like objects, read with
attribute access (``dataset.number``, ``dataset.rotations``...).

Symmetry operations ``(W, w)`` act on fractional coordinates as column
vectors, ``x' = W x + w``. On a wave vector in reciprocal fractional
coordinates (``k_cart = k @ B``, ``B = 2π L^{-T}``) the same rotation acts as
``k' = W^{-T} k``, which keeps ``k·x`` invariant; :func:`irreducible_kpoints`
uses this (and checks it against spglib's ``get_ir_reciprocal_mesh`` in the
tests).

References:
    A. Togo, K. Shinohara, I. Tanaka, "Spglib: a software library for crystal
    symmetry search", Sci. Technol. Adv. Mater. Meth. 4, 2384822 (2024).
    H. J. Monkhorst and J. D. Pack, Phys. Rev. B 13, 5188 (1976).
    W. Setyawan and S. Curtarolo, Comput. Mater. Sci. 49, 299 (2010) (band paths, via ASE).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from difcrys import crystal as _crystal
from difcrys.crystal import Crystal
from difcrys.errors import ConfigError, StructureError

__all__ = [
    "DEFAULT_SYMPREC",
    "spglib_cell",
    "symmetry_dataset",
    "spacegroup",
    "crystal_system",
    "bravais_lattice",
    "point_group_rotations",
    "standardize",
    "primitive",
    "monkhorst_pack",
    "irreducible_kpoints",
    "BandPath",
    "band_path",
]

DEFAULT_SYMPREC = 1e-5  # Å, spglib's default distance tolerance


# --------------------------------------------------------------------------- spglib glue
def spglib_cell(crystal: Crystal) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lattice [3,3] rows Å, frac [n,3], numbers [n])`` of the real atoms, as spglib wants them."""
    if np.asarray(crystal.numbers).ndim != 1:
        raise StructureError("symmetry functions work on a single crystal; got a batch")
    m = np.asarray(crystal.mask, dtype=bool)
    return (np.asarray(crystal.lattice, dtype=float), np.asarray(crystal.frac, dtype=float)[m],
            np.asarray(crystal.numbers, dtype=np.int32)[m])


def _quiet(fn, *args, **kw):
    """Call spglib silencing its DeprecationWarning about the old error handling."""
    import spglib  # noqa: F401

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return fn(*args, **kw)
        except Exception as e:  # noqa: BLE001 - spglib.error.SpglibError and friends
            raise StructureError(f"spglib failed: {type(e).__name__}: {e}") from None


def _check_symprec(symprec: float) -> float:
    symprec = float(symprec)
    if not symprec > 0:
        raise ConfigError(f"symprec must be a positive distance tolerance in Å, got {symprec}")
    return symprec


def symmetry_dataset(crystal: Crystal, symprec: float = DEFAULT_SYMPREC, angle_tolerance: float = -1.0):
    """spglib's ``SpglibDataset`` of the crystal (space group, operations, Wyckoff letters, standard cell).

    Args:
        crystal: a single crystal.
        symprec: distance tolerance [Å].
        angle_tolerance: angle tolerance [deg]; ``-1`` lets spglib choose.

    Raises:
        StructureError: spglib cannot determine the symmetry (e.g. atoms too close for ``symprec``).
    """
    import spglib

    symprec = _check_symprec(symprec)
    ds = _quiet(spglib.get_symmetry_dataset, spglib_cell(crystal), symprec=symprec,
                angle_tolerance=angle_tolerance)
    if ds is None:
        raise StructureError(f"spglib could not determine the symmetry of {crystal.formula} "
                             f"(symprec={symprec} Å); try a different symprec")
    return ds


def spacegroup(crystal: Crystal, symprec: float = DEFAULT_SYMPREC, angle_tolerance: float = -1.0) -> tuple[int, str]:
    """Space group ``(number 1..230, international short symbol)``, e.g. ``(227, "Fd-3m")``."""
    ds = symmetry_dataset(crystal, symprec, angle_tolerance)
    return int(ds.number), str(ds.international)


def crystal_system(crystal: Crystal | int, symprec: float = DEFAULT_SYMPREC) -> str:
    """Crystal system (``"cubic"``...) of a crystal, or of a space group number."""
    if isinstance(crystal, (int, np.integer)):
        return _crystal.crystal_system(int(crystal))
    return _crystal.crystal_system(spacegroup(crystal, symprec)[0])


def bravais_lattice(crystal: Crystal, symprec: float = DEFAULT_SYMPREC) -> str:
    """Bravais lattice as a Pearson symbol (``"cF"`` for Si...), see :data:`difcrys.crystal.BRAVAIS_LATTICES`."""
    number, symbol = spacegroup(crystal, symprec)
    return _crystal.bravais_lattice(number, symbol)


def point_group_rotations(crystal: Crystal, symprec: float = DEFAULT_SYMPREC) -> np.ndarray:
    """Distinct rotation parts ``W`` ``[n_rot, 3, 3]`` (int) of the space-group operations.

    They act on fractional coordinates as column vectors (``x' = W x + w``).
    Pure translations of a non-primitive cell collapse onto the identity.
    """
    ds = symmetry_dataset(crystal, symprec)
    rots = np.asarray(ds.rotations, dtype=int)
    return np.unique(rots.reshape(-1, 9), axis=0).reshape(-1, 3, 3)


def _from_spglib_cell(cell, what: str) -> Crystal:
    lattice, frac, numbers = (np.asarray(x) for x in cell[:3])
    frac = frac - np.floor(frac + 1e-12)
    if np.linalg.det(lattice) < 0:  # spglib keeps handedness; stay safe (see difcrys.io)
        lattice, frac = lattice[[1, 0, 2]], frac[:, [1, 0, 2]]
    try:
        return Crystal.create(numbers.astype(int), frac, lattice)
    except StructureError as e:
        raise StructureError(f"{what}: {e}") from None


def standardize(crystal: Crystal, to_primitive: bool = False, no_idealize: bool = False,
                symprec: float = DEFAULT_SYMPREC, angle_tolerance: float = -1.0) -> Crystal:
    """spglib's standardized cell: conventional (default) or primitive.

    With ``no_idealize=False`` (default) the lattice is rotated to the standard
    orientation and symmetrized, and atoms are moved to ideal Wyckoff positions.

    Raises:
        StructureError: spglib fails for this ``symprec``.
    """
    import spglib

    symprec = _check_symprec(symprec)
    cell = _quiet(spglib.standardize_cell, spglib_cell(crystal), to_primitive=to_primitive,
                  no_idealize=no_idealize, symprec=symprec, angle_tolerance=angle_tolerance)
    if cell is None:
        raise StructureError(f"spglib could not standardize {crystal.formula} (symprec={symprec} Å)")
    return _from_spglib_cell(cell, "standardized cell")


def primitive(crystal: Crystal, symprec: float = DEFAULT_SYMPREC) -> Crystal:
    """The standard primitive cell (spglib ``standardize_cell(to_primitive=True)``)."""
    return standardize(crystal, to_primitive=True, symprec=symprec)


# --------------------------------------------------------------------------- k-point meshes
def _check_mesh(mesh, shift) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(mesh)
    if m.shape == ():
        m = np.repeat(m, 3)
    if m.shape != (3,) or not np.all(np.equal(np.mod(m, 1), 0)) or np.any(m < 1):
        raise ConfigError(f"k-point mesh must be three positive integers, got {mesh!r}")
    s = np.asarray(shift, dtype=float)
    if s.shape == ():
        s = np.repeat(s, 3)
    if s.shape != (3,) or not np.all(np.isfinite(s)):
        raise ConfigError(f"k-point shift must be three finite numbers (units of the grid spacing), got {shift!r}")
    return m.astype(int), s


def _grid_integers(mesh: np.ndarray) -> np.ndarray:
    n = np.stack(np.meshgrid(*[np.arange(k) for k in mesh], indexing="ij"), -1)
    return n.reshape(-1, 3)


def _fold(k: np.ndarray) -> np.ndarray:
    """Fold fractional k into [-1/2, 1/2)."""
    k = k - np.floor(k + 0.5)
    k[np.isclose(k, 0.5, atol=1e-12)] -= 1.0
    return k + 0.0  # no negative zeros


def monkhorst_pack(mesh, shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Uniform k-point grid in reciprocal fractional coordinates.

    ``k = (n + s) / N`` for ``n = 0..N-1`` along each axis, folded into
    ``[-1/2, 1/2)``: the shift ``s`` is in units of the grid spacing, as ABINIT's
    ``shiftk`` and VASP's KPOINTS shift. ``s = 0`` is Γ-centred;
    ``s = 1/2`` along an axis with even ``N`` gives the original Monkhorst–Pack
    points ``(2r - N - 1) / (2N)`` (Monkhorst & Pack 1976, Eq. 3) up to a
    reciprocal lattice vector.

    Args:
        mesh: ``(N1, N2, N3)`` positive integers (or one integer for all axes).
        shift: ``(s1, s2, s3)`` in units of the grid spacing.

    Returns:
        ``[N1 N2 N3, 3]`` fractional k-points (multiply by ``B = 2π L^{-T}`` for 1/Å),
        ordered with ``n1`` slowest and ``n3`` fastest (C order).
    """
    m, s = _check_mesh(mesh, shift)
    return _fold((_grid_integers(m) + s) / m)


def irreducible_kpoints(crystal: Crystal, mesh, shift=(0.0, 0.0, 0.0), time_reversal: bool = True,
                        symprec: float = DEFAULT_SYMPREC, return_mapping: bool = False):
    """Irreducible points of a :func:`monkhorst_pack` grid and their weights.

    The point group rotations ``W`` of the crystal act on fractional k as
    ``W^{-T}``; with ``time_reversal`` also ``-W^{-T}`` (``ε(-k) = ε(k)`` without
    spin-orbit/magnetism). Only the operations that map the (shifted) grid onto
    itself are used, so any shift works (a shift that breaks a symmetry just
    leaves more points). Two grid points are equivalent when an operation maps
    one onto the other modulo a reciprocal lattice vector; each class is
    represented by its first member in :func:`monkhorst_pack` order.

    Args:
        crystal: the crystal (its spglib point group is used).
        mesh: ``(N1, N2, N3)``.
        shift: grid shift in units of the grid spacing (see :func:`monkhorst_pack`).
        time_reversal: also use ``k -> -k``.
        symprec: spglib distance tolerance [Å].
        return_mapping: also return the full-grid to irreducible-point map.

    Returns:
        ``(kpts [n_ir, 3] fractional, weights [n_ir] summing to 1)``, plus with
        ``return_mapping`` an int array ``[N1 N2 N3]`` giving, for each point of
        ``monkhorst_pack(mesh, shift)``, the index of its irreducible point.
    """
    m, s = _check_mesh(mesh, shift)
    rots = point_group_rotations(crystal, symprec)
    kops = np.rint(np.linalg.inv(rots).transpose(0, 2, 1)).astype(int)  # W^{-T}
    if time_reversal:
        kops = np.unique(np.concatenate([kops, -kops]).reshape(-1, 9), axis=0).reshape(-1, 3, 3)
    n = _grid_integers(m)
    nk = len(n)
    k = (n + s) / m  # [nk, 3]
    images = []
    for R in kops:
        kp = k @ R.T  # R k for each k (column convention)
        g = kp * m - s  # grid coordinates of the image
        gi = np.rint(g)
        if np.max(np.abs(g - gi)) > 1e-6:
            continue  # this operation does not map the shifted grid onto itself
        gi = np.mod(gi.astype(int), m)
        images.append(np.ravel_multi_index(gi.T, tuple(m)))
    images = np.stack(images)  # [n_ops_kept, nk]; includes the identity
    rep = images.min(axis=0)  # smallest index in the orbit (the kept operations form a group)
    ir_index, mapping, counts = np.unique(rep, return_inverse=True, return_counts=True)
    kpts = _fold(k[ir_index])
    weights = counts / nk
    if return_mapping:
        return kpts, weights, mapping.astype(int)
    return kpts, weights


# --------------------------------------------------------------------------- band paths
class BandPath(NamedTuple):
    """A band-structure path.

    Attributes:
        kpts: ``[nk, 3]`` fractional k-points in the reciprocal basis of the given cell.
        x: ``[nk]`` cumulative distance along the path [1/Å, including 2π]; zero
            steps across path breaks (``","`` in ``path``).
        special_x: ``[n_special]`` x positions of the labelled special points.
        labels: ``n_special`` labels (``"Γ"`` for the zone centre).
        path: ASE/Setyawan–Curtarolo path string, e.g. ``"GXWKGLUWLK,UX"``.
        special_points: label -> fractional coordinates in the given cell's basis.
        lattice: Bravais lattice name used by ASE (e.g. ``"FCC"``).
    """

    kpts: np.ndarray
    x: np.ndarray
    special_x: np.ndarray
    labels: list
    path: str
    special_points: dict
    lattice: str


def _idealized_lattice(crystal: Crystal, symprec: float) -> np.ndarray:
    """The given cell with its metric symmetrized by spglib (same basis, same orientation)."""
    ds = symmetry_dataset(crystal, symprec)
    P = np.asarray(ds.transformation_matrix, float)
    R = np.asarray(ds.std_rotation_matrix, float)
    L_std = np.asarray(ds.std_lattice, float)
    # spglib: (a_s b_s c_s) = (a b c) P^{-1}, std_lattice columns = R (a_s b_s c_s)
    # => (a b c)_ideal = R^T std_columns P  => rows: L_ideal = P^T L_std R
    L_ideal = P.T @ L_std @ R
    L = np.asarray(crystal.lattice, float)
    if not np.allclose(L_ideal, L, atol=max(10 * symprec, 1e-3) * np.abs(L).max()):
        return L  # unexpected setting: fall back to the cell as given
    return L_ideal


def band_path(crystal: Crystal, npoints: int = 100, path: str | None = None,
              symprec: float = 1e-3, eps: float = 2e-4, special_points: dict | None = None) -> BandPath:
    """Standard high-symmetry k-path for the crystal's lattice (ASE ``Cell.bandpath``).

    ASE identifies which of the 14 Bravais lattices the cell's metric belongs
    to and returns the Setyawan–Curtarolo path; the metric is first
    symmetrized with spglib at ``symprec`` so that slightly distorted cells are
    recognised. k-points are fractional in the basis of the *given* cell. The
    path follows the given cell: for a conventional (non-primitive) cell it is
    the path of that cell's own lattice (folded bands); use
    :func:`primitive` first for the textbook path. When the atoms break the
    lattice symmetry (e.g. a tetragonal crystal with ``c = a``), the path of the
    higher-symmetry lattice is returned. Known ASE limitation: some C-centred
    monoclinic (mC) cells are identified as triclinic, and get the TRI path
    (about 2% of the mp_20 subset; see tests/test_symmetry.py).

    Args:
        crystal: the crystal.
        npoints: total number of k-points.
        path: optional path string in ASE labels (``"GXWKGL"``; ``","`` breaks).
        symprec: spglib tolerance [Å] for symmetrizing the metric.
        eps: ASE's tolerance for identifying the lattice.
        special_points: optional ``{label: fractional k}`` to bypass the lattice detection.

    Raises:
        ConfigError: bad ``npoints`` or an unknown label in ``path``.
    """
    from ase.cell import Cell
    from ase.dft.kpoints import BandPath as _AseBandPath

    if int(npoints) < 2:
        raise ConfigError(f"npoints must be >= 2, got {npoints}")
    L = np.asarray(crystal.lattice, float)
    try:
        L_ideal = _idealized_lattice(crystal, symprec)
    except StructureError:
        L_ideal = L
    cell = Cell(L_ideal)
    try:
        bp = cell.bandpath(path, npoints=int(npoints), eps=eps, special_points=special_points)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"cannot build band path {path!r}: {type(e).__name__}: {e}") from None
    try:
        lattice_name = cell.get_bravais_lattice(eps=eps).name if special_points is None else "custom"
    except Exception:  # noqa: BLE001
        lattice_name = "unknown"
    exact = _AseBandPath(cell=Cell(L), kpts=bp.kpts, special_points=bp.special_points, path=bp.path)
    x, special_x, labels = exact.get_linear_kpoint_axis()
    labels = ["Γ" if lab == "G" else lab for lab in labels]
    return BandPath(kpts=np.asarray(bp.kpts, float), x=np.asarray(x, float), special_x=np.asarray(special_x, float),
                    labels=labels, path=bp.path, special_points={k: np.asarray(v, float)
                                                                  for k, v in bp.special_points.items()},
                    lattice=lattice_name)
