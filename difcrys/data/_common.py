"""Shared host-side helpers of the dataset readers: building checked Crystals fast.

Readers build :class:`difcrys.crystal.Crystal` objects with **NumPy leaves**
(host-side; thousands of small device arrays would be slow to create and are
not needed until a batch is formed). The checks are those of
:meth:`difcrys.crystal.Crystal.validate` (NaN, unknown element, singular
lattice, overlapping atoms), but the overlap search uses a k-d tree over the
atoms and the periodic images within reach, which is O(n log n) instead of the
foundation's O(n^2 · images) Python loop (40 ms → ~1 ms for 192 atoms), so that
whole data sets can be checked when they are read.

Left-handed lattices (``det L < 0``, found in some files) are made
right-handed by swapping lattice vectors 0 and 1 together with fractional
coordinate columns 0 and 1: cartesian positions, forces and stresses are
unchanged, only the labelling of the cell vectors changes.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from difcrys.crystal import MIN_DISTANCE_ANG, Crystal
from difcrys.errors import FileFormatError, StructureError

MAX_Z = 118


class DatasetError(FileFormatError):
    """A data set or a data file is unusable: empty, NaN labels, inconsistent shapes.

    Subclass of :class:`difcrys.errors.FileFormatError` (hence also of
    ``DifcrysError`` and ``ValueError``); defined here because the foundation's
    ``errors.py`` has no data-set-specific class.
    """


def check_file(path) -> str:
    """Return ``str(path)`` or raise FileFormatError when it does not exist."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileFormatError(f"file not found: {p}")
    return p


def make_right_handed(lattice: np.ndarray, frac: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Swap lattice vectors 0↔1 (and fractional columns 0↔1) when ``det L < 0``.

    Returns ``(lattice, frac, swapped)``; cartesian positions ``frac @ lattice``
    are unchanged.
    """
    if np.linalg.det(lattice) < 0:
        return lattice[[1, 0, 2]], frac[:, [1, 0, 2]], True
    return lattice, frac, False


def min_distance_fast(frac: np.ndarray, lattice: np.ndarray, cutoff: float) -> tuple[float, tuple[int, int]]:
    """Smallest periodic interatomic distance below ``cutoff`` [Å] and its pair, else ``(inf, (-1, -1))``.

    Host-side; builds the periodic images that lie within ``cutoff`` of the
    cell and queries a k-d tree. Exact for distances below ``cutoff``.
    """
    from scipy.spatial import cKDTree

    n = len(frac)
    f = frac - np.floor(frac)
    inv = np.linalg.inv(lattice)
    heights = 1.0 / np.linalg.norm(inv, axis=0)  # distance between opposite cell faces
    margin = cutoff / heights  # in fractional units, per axis
    nrep = np.ceil(margin).astype(int)
    rng = [np.arange(-k, k + 1) for k in nrep]
    shifts = np.stack(np.meshgrid(*rng, indexing="ij"), -1).reshape(-1, 3)
    if n * n * len(shifts) <= 200_000:
        # small cells: all pairs and images at once (f_i - f_j in (-1, 1), so |s| <= nrep suffices)
        d = (f[:, None, None, :] - f[None, :, None, :] + shifts[None, None, :, :]) @ lattice
        r = np.linalg.norm(d, axis=-1)
        zero = np.all(shifts == 0, axis=1)
        r[np.arange(n), np.arange(n)] = np.where(zero[None, :], np.inf, r[np.arange(n), np.arange(n)])
        k = np.unravel_index(np.argmin(r), r.shape)
        if r[k] < cutoff:
            return float(r[k]), (int(k[0]), int(k[1]))
        return np.inf, (-1, -1)
    g = f[None, :, :] + shifts[:, None, :]  # [S, n, 3]
    keep = np.all((g > -margin) & (g < 1 + margin), axis=2)
    zero = np.all(shifts == 0, axis=1)
    keep[zero] = True
    pos = g[keep] @ lattice
    # original atom index, +n for a non-zero image
    idx = (np.arange(n)[None, :] + n * (~zero)[:, None] + 0 * keep)[keep]
    tree = cKDTree(pos)
    base = f @ lattice
    counts = tree.query_ball_point(base, r=cutoff, return_length=True)
    if np.all(counts <= 1):  # only the atom itself
        return np.inf, (-1, -1)
    best, pair = np.inf, (-1, -1)
    for i in np.where(counts > 1)[0]:
        for j in tree.query_ball_point(base[i], r=cutoff):
            jj = idx[j]
            if jj == i:  # the atom itself (zero shift)
                continue
            d = float(np.linalg.norm(pos[j] - base[i]))
            if d < best:
                best, pair = d, (int(i), int(jj % n))
    return best, pair


def check_structure(numbers: np.ndarray, frac: np.ndarray, lattice: np.ndarray,
                    min_distance: float = MIN_DISTANCE_ANG, where: str = "") -> None:
    """Host-side structure checks with a message naming ``where`` (file and frame).

    Raises:
        StructureError: empty, shape mismatch, NaN/inf, singular or
            left-handed lattice, atoms closer than ``min_distance`` Å.
        ElementError: atomic number outside 1..118 (as StructureError subclass).
    """
    from difcrys.errors import ElementError

    pre = f"{where}: " if where else ""
    if numbers.ndim != 1 or len(numbers) == 0:
        raise StructureError(f"{pre}empty structure: no atoms")
    if frac.shape != (len(numbers), 3):
        raise StructureError(f"{pre}shape mismatch: {len(numbers)} atoms but coordinates of shape {frac.shape}")
    if lattice.shape != (3, 3):
        raise StructureError(f"{pre}lattice must be 3x3, got shape {lattice.shape}")
    if not np.all(np.isfinite(lattice)):
        raise StructureError(f"{pre}lattice contains NaN or infinite values")
    det = np.linalg.det(lattice)
    lengths = np.linalg.norm(lattice, axis=1)
    if abs(det) < 1e-6 * max(float(np.prod(lengths)), 1e-30) or np.any(lengths < 1e-8):
        raise StructureError(f"{pre}singular lattice: the lattice vectors are (nearly) linearly dependent "
                             f"(volume {det:.3g} Å^3)")
    if not np.all(np.isfinite(frac)):
        bad = np.where(~np.all(np.isfinite(frac), axis=1))[0]
        raise StructureError(f"{pre}NaN or infinite coordinate for atom(s) {bad[:10].tolist()}")
    if np.any(numbers < 1) or np.any(numbers > MAX_Z):
        bad = numbers[(numbers < 1) | (numbers > MAX_Z)]
        raise ElementError(f"{pre}unknown element: atomic number {int(bad[0])} (valid: 1..{MAX_Z})")
    if det < 0:
        raise StructureError(f"{pre}left-handed lattice (det L = {det:.4g} < 0)")
    if min_distance > 0:
        d, (i, j) = min_distance_fast(frac, lattice, min_distance)
        if d < min_distance:
            raise StructureError(f"{pre}overlapping atoms: atoms {i} and {j} are {d:.3f} Å apart "
                                 f"(< {min_distance} Å; lower min_distance= to accept them)")


def make_crystal(numbers, frac, lattice, *, validate: bool = True, min_distance: float = MIN_DISTANCE_ANG,
                 wrap: bool = False, where: str = "") -> tuple[Crystal, bool]:
    """Build one host-side Crystal (NumPy leaves) after optional checks.

    Args:
        numbers: ``[n]`` atomic numbers.
        frac: ``[n, 3]`` fractional coordinates.
        lattice: ``[3, 3]`` lattice rows [Å]; left-handed cells are made right-handed.
        validate: run :func:`check_structure`.
        min_distance: overlap threshold [Å] (0 disables the overlap check).
        wrap: wrap fractional coordinates into [0, 1).
        where: context for error messages (file and frame).

    Returns:
        ``(crystal, swapped)``, ``swapped`` True when lattice vectors 0 and 1 were exchanged.
    """
    crystals, swapped = make_crystals([numbers], [frac], [lattice], validate=validate,
                                      min_distance=min_distance, wrap=wrap, wheres=[where])
    return crystals[0], bool(swapped[0])


def make_crystals(numbers_list, frac_list, lattice_list, *, validate: bool = True,
                  min_distance: float = MIN_DISTANCE_ANG, wrap: bool = False,
                  wheres=None) -> tuple[list[Crystal], np.ndarray]:
    """Build many host-side Crystals; the checks are vectorised over structures of equal size.

    Same checks and messages as :func:`check_structure` (the first failing structure,
    in input order, is reported with its ``wheres`` entry). Returns
    ``(crystals, swapped [N] bool)``.
    """
    N = len(numbers_list)
    wheres = list(wheres) if wheres is not None else [f"structure {k}" for k in range(N)]
    nums = [np.asarray(z, dtype=np.int32).reshape(-1) for z in numbers_list]
    fracs = [np.asarray(f, dtype=np.float64).reshape(-1, 3) for f in frac_list]
    lats = [np.asarray(L, dtype=np.float64) for L in lattice_list]
    swapped = np.zeros(N, bool)
    for k in range(N):
        L = lats[k]
        if L.shape == (3, 3) and np.all(np.isfinite(L)) and np.linalg.det(L) < 0:
            lats[k], fracs[k], swapped[k] = L[[1, 0, 2]], fracs[k][:, [1, 0, 2]], True
        if wrap and np.all(np.isfinite(fracs[k])):
            f = fracs[k] - np.floor(fracs[k])
            f[f >= 1.0] -= 1.0
            fracs[k] = f
    if validate:
        _check_many(nums, fracs, lats, min_distance, wheres)
    crystals = [Crystal(numbers=z, frac=f, lattice=L, mask=np.ones(len(z), dtype=bool))
                for z, f, L in zip(nums, fracs, lats)]
    return crystals, swapped


def _check_many(nums, fracs, lats, min_distance, wheres) -> None:
    """Vectorised :func:`check_structure` over many structures; raises for the first failure."""
    N = len(nums)
    bad = np.full(N, False)
    # cheap checks, per structure (shape problems are rare): defer to check_structure on failure
    groups: dict[int, list[int]] = {}
    for k in range(N):
        z, f, L = nums[k], fracs[k], lats[k]
        if (z.ndim != 1 or len(z) == 0 or f.shape != (len(z), 3) or L.shape != (3, 3)
                or not np.isfinite(L).all() or not np.isfinite(f).all()
                or z.min() < 1 or z.max() > MAX_Z):
            bad[k] = True
        else:
            groups.setdefault(len(z), []).append(k)
    for n, members in groups.items():
        idx = np.asarray(members)
        L = np.stack([lats[k] for k in idx])  # [G, 3, 3]
        det = np.linalg.det(L)
        lengths = np.linalg.norm(L, axis=2)
        sing = (np.abs(det) < 1e-6 * np.maximum(np.prod(lengths, axis=1), 1e-30)) | np.any(lengths < 1e-8, axis=1)
        bad[idx[sing | (det < 0)]] = True
        ok = ~(sing | (det < 0))
        if min_distance <= 0 or not ok.any():
            continue
        idx, L = idx[ok], L[ok]
        heights = 1.0 / np.linalg.norm(np.linalg.inv(L), axis=1)  # [G, 3]: 1/|column of L^-1|
        nrep = np.ceil(min_distance / heights).astype(int).max()
        rng = np.arange(-nrep, nrep + 1)
        shifts = np.stack(np.meshgrid(rng, rng, rng, indexing="ij"), -1).reshape(-1, 3).astype(float)
        S = len(shifts)
        if n * n * S > 150_000:  # big cells: k-d tree per structure
            for k in idx:
                d, _ = min_distance_fast(fracs[k], lats[k], min_distance)
                bad[k] |= d < min_distance
            continue
        F = np.stack([fracs[k] for k in idx])
        F = F - np.floor(F)
        zero = np.all(shifts == 0, axis=1)
        eye = np.eye(n, dtype=bool)
        chunk = max(1, 2_000_000 // (n * n * S * 3))
        for a in range(0, len(idx), chunk):
            Fa, La = F[a:a + chunk], L[a:a + chunk]
            d = (Fa[:, :, None, None, :] - Fa[:, None, :, None, :] + shifts) @ La[:, None, None]  # [g,n,n,S,3]
            r2 = np.einsum("...i,...i->...", d, d)
            r2[:, eye[:, :, None] & zero[None, None, :]] = np.inf
            close = (r2 < min_distance ** 2).reshape(len(Fa), -1).any(axis=1)
            bad[idx[a:a + chunk][close]] = True
    if bad.any():
        k = int(np.argmax(bad))
        check_structure(nums[k], fracs[k], lats[k], min_distance=min_distance, where=wheres[k])
        raise AssertionError(f"{wheres[k]}: bulk check flagged a structure that check_structure accepts")


def symbols_to_numbers(symbols: Sequence[str], where: str = "") -> np.ndarray:
    """Element symbols (``"Si"``, ``"Fe2+"``, ``"O1-"``) → atomic numbers; raises ElementError."""
    from difcrys.crystal import atomic_number
    from difcrys.errors import ElementError

    out = np.empty(len(symbols), dtype=np.int32)
    cache: dict[str, int] = {}
    for k, s in enumerate(symbols):
        z = cache.get(s)
        if z is None:
            letters = "".join(ch for ch in str(s) if ch.isalpha())
            try:
                z = atomic_number(letters)
            except ElementError as e:
                raise ElementError(f"{where}: {e}" if where else str(e)) from None
            cache[s] = z
        out[k] = z
    return out

