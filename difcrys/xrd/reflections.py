"""Host-side enumeration of reciprocal-lattice points and grouping into stick peaks.

The set of reflections that can diffract is decided on the host (it has a
data-dependent size) and padded to a static capacity, so that everything
downstream (:mod:`difcrys.xrd.pattern`) is a pure, jit-able and vmap-able
function of fixed-size arrays.

* **Enumeration.** All integer ``hkl ≠ 0`` with ``|g_hkl| ≤ g_max (1 + margin)``,
  where ``g = |h B*|`` with ``B* = L^{-T}`` the crystallographic reciprocal basis
  (no 2π) and ``g_max = 2 sin(θ_max)/λ`` is the radius of the limiting sphere cut at
  2θ_max. ``margin > 0`` keeps reflections that may enter the 2θ window when the
  lattice changes during refinement or gradient steps (a reflection outside the
  window at the *current* lattice is masked inside JAX, so the window edge is exact).
* **Friedel half-space.** Without anomalous dispersion ``I(-g) = I(g)``; only
  the half-space ``h > 0 or (h = 0, k > 0) or (h = k = 0, l > 0)`` is kept and
  each intensity is doubled. Multiplicities need no separate treatment: every
  symmetry-equivalent reflection of the sphere is enumerated and contributes.
* **Stick-peak groups.** Reflections at the same Bragg angle (symmetry
  equivalents and accidental coincidences) form one stick peak. Groups are fixed
  on the host at the input lattice by rounding 2θ to multiples of ``tol`` (1e-5°,
  as pymatgen's ``XRDCalculator``); intensities are summed per group inside JAX with a
  ``segment_sum`` of static size. For gradients of stick patterns the grouping is
  held fixed (symmetry-equivalent reflections stay degenerate under symmetric
  strain). Profile patterns do not use the groups: every reflection carries its
  own peak, so they are exactly differentiable across coincidences.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import numpy as np

from difcrys.errors import CapacityError, ConfigError, StructureError
from difcrys.xrd import radiation

TWO_THETA_TOL = 1e-5  # degrees; reflections whose rounded 2θ agree form one stick peak


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Reflections:
    """Fixed-size reflection list for one crystal (or a batch, with a leading axis).

    Attributes:
        hkl: ``[M, 3]`` Miller indices (float, integer-valued) of the Friedel half-space.
        mask: ``[M]`` bool, True for enumerated reflections (False: padding).
        group: ``[M]`` int32 stick-peak index in ``0..G-1``; ``G`` (one past the end)
            for reflections outside the nominal 2θ window and for padding.
        rep: ``[G]`` int32 index of each group's representative reflection (the one
            with smallest |g|, then largest h, k, l).
        group_mask: ``[G]`` bool, True for real groups.
    """

    hkl: jax.Array
    mask: jax.Array
    group: jax.Array
    rep: jax.Array
    group_mask: jax.Array

    @property
    def capacity(self) -> int:
        return self.hkl.shape[-2]

    @property
    def n_groups(self) -> int:
        return self.rep.shape[-1]


def _recip(lattice: np.ndarray) -> np.ndarray:
    return np.linalg.inv(lattice).T  # rows b_i with a_i . b_j = δ_ij


def enumerate_hkl(lattice, g_max: float, g_min: float = 0.0) -> np.ndarray:
    """All ``hkl`` (Friedel half-space) with ``g_min <= |g| <= g_max`` [1/Å], sorted like pymatgen.

    Sort order: increasing |g|, then decreasing h, k, l. Returns ``[m, 3]`` int.
    """
    lattice = np.asarray(lattice, float)
    B = _recip(lattice)
    # |h_i| <= g_max |a_i| since h_i = g . a_i
    nmax = np.floor(g_max * np.linalg.norm(lattice, axis=1) + 1e-9).astype(int)
    if np.prod(2 * nmax + 1) > 5e7:
        raise CapacityError(f"too many reciprocal-lattice points to enumerate (box {2 * nmax + 1}); "
                            "reduce the 2θ range or use a shorter cell")
    rng = [np.arange(-n, n + 1) for n in nmax]
    h = np.stack(np.meshgrid(*rng, indexing="ij"), -1).reshape(-1, 3)
    half = (h[:, 0] > 0) | ((h[:, 0] == 0) & (h[:, 1] > 0)) | ((h[:, 0] == 0) & (h[:, 1] == 0) & (h[:, 2] > 0))
    h = h[half]
    g = np.linalg.norm(h @ B, axis=1)
    keep = (g <= g_max * (1 + 1e-12)) & (g >= g_min * (1 - 1e-12))
    h, g = h[keep], g[keep]
    order = np.lexsort((-h[:, 2], -h[:, 1], -h[:, 0], g))
    return h[order]


def _g_limits(lam: float, rng) -> tuple[float, float]:
    lo, hi = rng
    return 2 * math.sin(math.radians(lo / 2)) / lam, 2 * math.sin(math.radians(hi / 2)) / lam


def reflections(crystal_or_lattice, wavelength=1.54184, two_theta_range=(0.0, 90.0), *, margin: float = 0.0,
                capacity: int | None = None, group_capacity: int | None = None,
                tol: float = TWO_THETA_TOL) -> Reflections:
    """Enumerate the reflections of a lattice inside the limiting sphere (host-side).

    Args:
        crystal_or_lattice: a :class:`~difcrys.crystal.Crystal` or ``[3, 3]`` lattice rows [Å].
        wavelength: λ [Å] or radiation name (``"CuKa"``); for a Kα doublet pass the
            *shortest* wavelength so that the sphere holds every reflection.
        two_theta_range: ``(min, max)`` 2θ [deg] that defines the stick-peak window.
        margin: relative enlargement of the |g| shell enumerated beyond the window
            (e.g. 0.05 when the lattice will change by a few %).
        capacity: static number of reflection slots (default: exactly as many as found);
            :class:`CapacityError` if more are needed.
        group_capacity: static number of stick-peak slots (default: as many as found).
        tol: 2θ tolerance [deg] for merging reflections into one stick peak.

    Returns:
        :class:`Reflections` with ``hkl [capacity, 3]``, ``group [capacity]`` etc.
    """
    lam = radiation.wavelength(wavelength)
    lo, hi = radiation.two_theta_range(two_theta_range)
    lattice = np.asarray(getattr(crystal_or_lattice, "lattice", crystal_or_lattice), float)
    if lattice.shape != (3, 3) or not np.all(np.isfinite(lattice)) or abs(np.linalg.det(lattice)) < 1e-8:
        raise StructureError(f"reflections need a finite non-singular 3x3 lattice, got {lattice!r}")
    if not margin >= 0:
        raise ConfigError(f"margin must be >= 0, got {margin}")
    g_lo, g_hi = _g_limits(lam, (lo, hi))
    g_max_enum = g_hi * (1 + margin)
    g_min_enum = g_lo / (1 + margin) if margin > 0 else g_lo
    hkl = enumerate_hkl(lattice, g_max_enum, g_min_enum)
    g = np.linalg.norm(hkl @ _recip(lattice), axis=1)
    # nominal window (pymatgen: g >= g_min when min > 0, g <= g_max)
    inside = (g <= g_hi * (1 + 1e-12)) & ((g >= g_lo) if g_lo > 0 else True)
    tt = np.degrees(2 * np.arcsin(np.clip(lam * g / 2, 0, 1)))
    keys = np.round(tt / tol).astype(np.int64)
    group = np.full(len(hkl), -1, np.int64)
    reps: list[int] = []
    seen: dict[int, int] = {}
    for i in np.where(inside)[0]:
        k = int(keys[i])
        if k not in seen:
            seen[k] = len(reps)
            reps.append(int(i))
        group[i] = seen[k]
    # groups must be ordered by 2θ (already, because hkl sorted by g and keys monotone in g)
    m, G = len(hkl), len(reps)
    cap = m if capacity is None else int(capacity)
    gcap = G if group_capacity is None else int(group_capacity)
    if m > cap:
        raise CapacityError(f"{m} reflections exceed the capacity {cap}")
    if G > gcap:
        raise CapacityError(f"{G} stick peaks exceed the group capacity {gcap}")
    cap, gcap = max(cap, 1), max(gcap, 1)
    H = np.zeros((cap, 3))
    H[:m] = hkl
    mask = np.zeros(cap, bool)
    mask[:m] = True
    grp = np.full(cap, gcap, np.int32)
    grp[:m] = np.where(group >= 0, group, gcap)
    rep = np.zeros(gcap, np.int32)
    rep[:G] = reps
    gm = np.zeros(gcap, bool)
    gm[:G] = True
    # numpy leaves: no eager device ops (and no recompilations) on the host path
    return Reflections(hkl=H, mask=mask, group=grp, rep=rep, group_mask=gm)


def pad_reflections(refl: Reflections, capacity: int, group_capacity: int) -> Reflections:
    """Pad a single :class:`Reflections` to larger static sizes (host-side)."""
    m, G = refl.capacity, refl.n_groups
    if m > capacity or G > group_capacity:
        raise CapacityError(f"cannot pad reflections ({m}, {G} groups) to ({capacity}, {group_capacity})")
    grp = np.asarray(refl.group).copy()
    grp[grp >= G] = group_capacity
    pm, pg = capacity - m, group_capacity - G
    return Reflections(
        hkl=np.concatenate([np.asarray(refl.hkl, float), np.zeros((pm, 3))]),
        mask=np.concatenate([np.asarray(refl.mask, bool), np.zeros(pm, bool)]),
        group=np.concatenate([grp.astype(np.int32), np.full(pm, group_capacity, np.int32)]),
        rep=np.concatenate([np.asarray(refl.rep, np.int32), np.zeros(pg, np.int32)]),
        group_mask=np.concatenate([np.asarray(refl.group_mask, bool), np.zeros(pg, bool)]),
    )


def batch_reflections(refls: Sequence[Reflections]) -> Reflections:
    """Stack reflection lists of several crystals, padded to common static sizes."""
    if not refls:
        raise ConfigError("cannot batch an empty list of reflections")
    cap = max(r.capacity for r in refls)
    gcap = max(r.n_groups for r in refls)
    padded = [pad_reflections(r, cap, gcap) for r in refls]
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *padded)


def is_hexagonal(lattice, angle_tol: float = 5.0, length_tol: float = 0.01) -> bool:
    """True for a hexagonal-like cell (two equal lengths at 120°/60°, the third ⟂ both)."""
    lattice = np.asarray(lattice, float)
    lengths = np.linalg.norm(lattice, axis=1)
    ang = []
    for i, j in ((1, 2), (0, 2), (0, 1)):
        c = lattice[i] @ lattice[j] / (lengths[i] * lengths[j])
        ang.append(math.degrees(math.acos(max(-1.0, min(1.0, c)))))
    right = [i for i in range(3) if abs(ang[i] - 90) < angle_tol]
    hexa = [i for i in range(3) if abs(ang[i] - 60) < angle_tol or abs(ang[i] - 120) < angle_tol]
    if len(right) == 2 and len(hexa) == 1:
        i = hexa[0]  # the angle between the other two vectors
        j, k = [x for x in range(3) if x != i]
        return abs(lengths[j] - lengths[k]) < length_tol * max(lengths[j], lengths[k])
    return False


def hkl_families(hkls: np.ndarray, hexagonal: bool = False) -> list[tuple[tuple[int, ...], int]]:
    """Group Miller indices into families (permutations up to sign) with multiplicities.

    Two reflections belong to one family when their sorted absolute indices agree
    (for hexagonal cells the 4-index Miller–Bravais ``(h, k, -h-k, l)`` form is used,
    as pymatgen does). Returns ``[(representative, multiplicity)]``; the representative
    is the largest member (lexicographically) in 3-index form.
    """
    fams: dict[tuple, list] = {}
    for h in np.asarray(hkls, int).reshape(-1, 3):
        t = tuple(int(v) for v in h)
        key4 = (t[0], t[1], -t[0] - t[1], t[2]) if hexagonal else t
        key = tuple(sorted(abs(v) for v in key4))
        fams.setdefault(key, []).append(t)
    return [(max(v), len(v)) for v in fams.values()]
