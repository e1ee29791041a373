"""Localized-basis Hamiltonian and overlap blocks in the DeePTB HDF5 layout.

Source: the ``Si64`` example of DeePTB (Gu et al., "A deep learning tight-binding
method for large-scale electronic simulations", Nat. Commun. 15, 6772 (2024);
github.com/deepmodeling/DeePTB ``examples/e3/data``), computed with ABACUS in an
LCAO basis. A frame folder contains

* ``hamiltonians.h5`` / ``overlaps.h5``: group ``"<frame>"`` holding datasets named
  ``"i_j_Rx_Ry_Rz"`` → ``[n_orb(i), n_orb(j)]`` blocks;
* ``cell.dat`` (lattice rows, Å), ``positions.dat`` (cartesian Å, per ``info.json``
  ``pos_type``), ``atomic_numbers.dat``, ``pbc.dat``, ``basis.dat``
  (``{'Si': '1s1p'}``), ``kpoints.npy``; ``info.json`` may sit in the parent.

Conventions, **determined from the data** (see ``tests/test_data.py``):

* atom indices ``i, j`` are **0-based** (0..63 for 64 atoms);
* block ``(i, j, R)`` couples orbital ``α`` of atom ``i`` in the home cell with
  orbital ``β`` of atom ``j`` in the cell translated by ``R`` (integer lattice
  coordinates): ``H_{iα,jβ}(R) = <φ_iα(r − τ_i)|Ĥ|φ_jβ(r − τ_j − R·L)>``, bond
  vector ``d = τ_j + R·L − τ_i`` (with the opposite sign the overlap would
  extend to 34 Å instead of 7.3 Å);
* hermiticity ``H_ij(R) = H_ji(−R)^T`` and the same for S; every block has its
  partner in the file; on-site overlaps ``S_ii(0) = I`` (normalised orbitals);
* **energies in eV**: the Γ-point valence band of the 64-atom cell
  (128 occupied bands) spans 12.5 eV, the known ≈12 eV valence band width of
  Si (in Ry it would be 170 eV); the on-site s–p splitting is 5.6 eV;
* orbital order per Si atom: ``[s, p_y, p_z, p_x]`` (real spherical harmonics
  m = −1, 0, +1, the e3nn order): the s–p hopping of a nearest-neighbour pair is
  proportional to the bond direction cosines (d_y, d_z, d_x) (correlation 0.997),
  as in the Slater–Koster form ``E_{s,p_x} = l V_spσ`` (Slater & Koster,
  Phys. Rev. 94, 1498 (1954), Table I);
* blocks are stored as float32 and returned as float64. ``S`` has fewer
  blocks than ``H`` (5,562 vs 9,434 for Si64); on the union pair list used here
  the missing overlap blocks are zero.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os

import numpy as np

from difcrys.crystal import MIN_DISTANCE_ANG, Crystal
from difcrys.data._common import DatasetError, check_file, make_crystal
from difcrys.errors import FileFormatError

_L_ORB = {"s": 1, "p": 3, "d": 5, "f": 7, "g": 9}


def orbitals_from_basis(spec: str) -> int:
    """Number of orbitals of a DeePTB basis string, e.g. ``"1s1p"`` → 4, ``"2s2p1d"`` → 13."""
    total, num = 0, ""
    for ch in spec.strip():
        if ch.isdigit():
            num += ch
        elif ch in _L_ORB:
            total += int(num or 1) * _L_ORB[ch]
            num = ""
        else:
            raise FileFormatError(f"unknown orbital letter {ch!r} in basis {spec!r}")
    if num:
        raise FileFormatError(f"basis {spec!r} ends with a number")
    return total


@dataclasses.dataclass
class HamiltonianData:
    """A structure with its real-space Hamiltonian and overlap blocks.

    Attributes:
        crystal: the Crystal (NumPy leaves).
        pairs: ``[P, 2]`` int, 0-based atom indices ``(i, j)``.
        shifts: ``[P, 3]`` int, lattice translation ``R`` of atom ``j``.
        H: ``[P, no, no]`` Hamiltonian blocks [eV] (``no`` = orbitals per atom, padded
            with zeros for atoms with fewer orbitals).
        S: ``[P, no, no]`` overlap blocks (dimensionless; zero where absent from the file).
        orbitals: ``[n]`` number of orbitals of each atom.
        basis: element → basis string (``{"Si": "1s1p"}``).
        kpoints: ``[K, 3]`` k-points of the source (fractional, reciprocal-lattice units) or None.
        pbc: ``[3]`` bool.
        meta: remaining information (``info.json``, source folder).
    """

    crystal: Crystal
    pairs: np.ndarray
    shifts: np.ndarray
    H: np.ndarray
    S: np.ndarray
    orbitals: np.ndarray
    basis: dict
    kpoints: np.ndarray | None
    pbc: np.ndarray
    meta: dict

    def blocks(self, which: str = "H") -> dict:
        """``{(i, j, (Rx, Ry, Rz)): block}`` for ``which`` in ``"H"``, ``"S"`` (unpadded blocks)."""
        arr = {"H": self.H, "S": self.S}[which]
        out = {}
        for (i, j), R, b in zip(self.pairs, self.shifts, arr):
            out[(int(i), int(j), tuple(int(x) for x in R))] = b[: self.orbitals[i], : self.orbitals[j]]
        return out

    def bond_vectors(self) -> np.ndarray:
        """``[P, 3]`` bond vectors ``d = τ_j + R·L − τ_i`` [Å]."""
        pos = np.asarray(self.crystal.frac) @ np.asarray(self.crystal.lattice)
        return pos[self.pairs[:, 1]] + self.shifts @ np.asarray(self.crystal.lattice) - pos[self.pairs[:, 0]]

    def bloch(self, k, which: str = "H") -> np.ndarray:
        """Bloch sum ``M(k) = Σ_R M(R) exp(2πi k·R)`` as a dense ``[N_orb, N_orb]`` complex matrix.

        Host-side reference implementation (NumPy) for tests and small systems;
        ``k`` in fractional reciprocal coordinates.
        """
        arr = {"H": self.H, "S": self.S}[which]
        phase = np.exp(2j * np.pi * (self.shifts @ np.asarray(k, float)))
        n, no = len(self.orbitals), arr.shape[1]
        if np.all(self.orbitals == no):  # uniform basis: one scatter-add
            m4 = np.zeros((n, n, no, no), complex)
            np.add.at(m4, (self.pairs[:, 0], self.pairs[:, 1]), phase[:, None, None] * arr)
            return m4.transpose(0, 2, 1, 3).reshape(n * no, n * no)
        off = np.concatenate([[0], np.cumsum(self.orbitals)])
        m = np.zeros((off[-1], off[-1]), complex)
        for (i, j), ph, b in zip(self.pairs, phase, arr):
            m[off[i]:off[i + 1], off[j]:off[j + 1]] += ph * b[: self.orbitals[i], : self.orbitals[j]]
        return m


def _find_frame_folder(folder: str) -> tuple[str, str | None]:
    """(frame folder with hamiltonians.h5, info.json path or None)."""
    if os.path.isfile(os.path.join(folder, "hamiltonians.h5")):
        frame = folder
    else:
        subs = sorted(d for d in os.listdir(folder) if os.path.isfile(os.path.join(folder, d, "hamiltonians.h5")))
        if not subs:
            raise FileFormatError(f"{folder}: no hamiltonians.h5 here or in a sub-folder")
        if len(subs) > 1:
            raise FileFormatError(f"{folder}: several frame folders {subs}; pass one of them")
        frame = os.path.join(folder, subs[0])
    for cand in (os.path.join(frame, "info.json"), os.path.join(os.path.dirname(frame), "info.json")):
        if os.path.isfile(cand):
            return frame, cand
    return frame, None


def _read_h5_blocks(path: str, group: str | None):
    import h5py

    try:
        fh = h5py.File(path, "r")
    except Exception as e:
        raise FileFormatError(f"{path}: not a readable HDF5 file ({type(e).__name__}: {e})") from e
    with fh:
        keys = list(fh.keys())
        if not keys:
            raise DatasetError(f"{path}: empty HDF5 file")
        g = group if group is not None else keys[0]
        if g not in fh:
            raise FileFormatError(f"{path}: no group {g!r} (groups: {keys[:5]})")
        grp = fh[g]
        gid = grp.id
        out = {}
        for name in grp.keys():
            parts = name.split("_")
            try:
                i, j, rx, ry, rz = (int(x) for x in parts)
            except ValueError:
                raise FileFormatError(f"{path}: dataset name {name!r} is not 'i_j_Rx_Ry_Rz'") from None
            # low-level read: ~3x faster than grp[name][()] for thousands of tiny datasets
            d = h5py.h5d.open(gid, name.encode())
            buf = np.empty(d.shape, dtype=d.dtype)
            d.read(h5py.h5s.ALL, h5py.h5s.ALL, buf)
            out[(i, j, (rx, ry, rz))] = buf.astype(np.float64)
    return out


def read_hamiltonian_h5(folder, *, frame: str | None = None, validate: bool = True,
                        min_distance: float = MIN_DISTANCE_ANG) -> HamiltonianData:
    """Read a DeePTB-style Hamiltonian/overlap folder (see the module docstring for conventions).

    Args:
        folder: the frame folder (``Si64.0``) or its parent holding exactly one frame folder.
        frame: HDF5 group name (default: the first, ``"0"``).
        validate, min_distance: structure checks.

    Returns:
        :class:`HamiltonianData` on the union of the H and S block lists, sorted by (i, j, R).

    Raises:
        FileFormatError: missing files, malformed names, block shapes inconsistent with the basis,
            atom indices out of range.
        DatasetError: empty HDF5 or NaN in a block (names the block).
    """
    folder = check_file(folder)
    frame_dir, info_path = _find_frame_folder(folder)
    info = {}
    if info_path:
        with open(info_path) as fh:
            info = json.load(fh)

    def need(fname):
        p = os.path.join(frame_dir, fname)
        if not os.path.isfile(p):
            raise FileFormatError(f"{frame_dir}: missing {fname}")
        return p

    lattice = np.loadtxt(need("cell.dat"), dtype=np.float64).reshape(3, 3)
    pos = np.loadtxt(need("positions.dat"), dtype=np.float64).reshape(-1, 3)
    numbers = np.loadtxt(need("atomic_numbers.dat"), dtype=np.int64, ndmin=1)
    if len(numbers) != len(pos):
        raise FileFormatError(f"{frame_dir}: {len(numbers)} atomic numbers but {len(pos)} positions")
    pos_type = str(info.get("pos_type", "cart")).lower()
    frac = pos @ np.linalg.inv(lattice) if pos_type.startswith("cart") else pos
    pbc_path = os.path.join(frame_dir, "pbc.dat")
    pbc = (np.loadtxt(pbc_path).reshape(-1).astype(bool) if os.path.isfile(pbc_path)
           else np.array([bool(info.get("pbc", True))] * 3))
    crystal, swapped = make_crystal(numbers, frac, lattice, validate=validate, min_distance=min_distance,
                                    where=frame_dir)
    if swapped:
        raise FileFormatError(f"{frame_dir}: left-handed cell; the lattice indices R of the blocks would "
                              "need relabelling, which is not supported")
    with open(need("basis.dat")) as fh:
        try:
            basis = ast.literal_eval(fh.read().strip())
        except (ValueError, SyntaxError) as e:
            raise FileFormatError(f"{frame_dir}/basis.dat: not a dict literal ({e})") from e
    from difcrys.crystal import chemical_symbol

    try:
        orbitals = np.array([orbitals_from_basis(basis[chemical_symbol(z)]) for z in numbers], dtype=np.int64)
    except KeyError as e:
        raise FileFormatError(f"{frame_dir}/basis.dat: no basis for element {e}") from None
    no = int(orbitals.max())
    hb = _read_h5_blocks(need("hamiltonians.h5"), frame)
    sb = _read_h5_blocks(need("overlaps.h5"), frame)
    keys = sorted(set(hb) | set(sb), key=lambda t: (t[0], t[1], t[2]))
    n = len(numbers)
    P = len(keys)
    pairs = np.zeros((P, 2), np.int64)
    shifts = np.zeros((P, 3), np.int64)
    H = np.zeros((P, no, no))
    S = np.zeros((P, no, no))
    for p, key in enumerate(keys):
        i, j, R = key
        if not (0 <= i < n and 0 <= j < n):
            raise FileFormatError(f"{frame_dir}: block {key} has an atom index outside 0..{n - 1} "
                                  "(indices are 0-based)")
        pairs[p] = (i, j)
        shifts[p] = R
        for arr, src, label in ((H, hb, "H"), (S, sb, "S")):
            b = src.get(key)
            if b is None:
                continue
            if b.shape != (orbitals[i], orbitals[j]):
                raise FileFormatError(f"{frame_dir}: {label} block {key} has shape {b.shape}, expected "
                                      f"({orbitals[i]}, {orbitals[j]}) from basis {basis}")
            if not np.all(np.isfinite(b)):
                raise DatasetError(f"{frame_dir}: NaN or infinite value in {label} block {key}")
            arr[p, : orbitals[i], : orbitals[j]] = b
    kp_path = os.path.join(frame_dir, "kpoints.npy")
    kpoints = np.load(kp_path, allow_pickle=False).astype(np.float64) if os.path.isfile(kp_path) else None
    meta = dict(info)
    meta.update({"folder": frame_dir, "n_H_blocks": len(hb), "n_S_blocks": len(sb), "energy_unit": "eV",
                 "orbital_order": "per shell, m = -l..l (p: y, z, x)"})
    return HamiltonianData(crystal=crystal, pairs=pairs, shifts=shifts, H=H, S=S, orbitals=orbitals,
                           basis=dict(basis), kpoints=kpoints, pbc=pbc, meta=meta)
