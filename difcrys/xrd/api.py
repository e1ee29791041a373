"""Host-side conveniences around the JAX pattern functions: inputs, peak tables, JSON.

:func:`xrd_peaks` is the one-call stick pattern (validation → enumeration →
jitted intensities → peak table with hkl families and multiplicities), and
:func:`simulate_profile` the one-call continuous pattern.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.crystal import Crystal, chemical_symbol
from difcrys.errors import ConfigError, StructureError
from difcrys.xrd import radiation
from difcrys.xrd.pattern import Profile, powder_pattern, reflection_intensities
from difcrys.xrd.reflections import Reflections, hkl_families, is_hexagonal, pad_reflections, reflections
from difcrys.xrd.scattering import check_elements, table_name

SCALED_INTENSITY_TOL = 1e-3  # stick peaks below this (of 100) are dropped, as in pymatgen


@dataclasses.dataclass
class PeakTable:
    """A stick pattern on the host.

    Attributes:
        two_theta: ``[p]`` peak positions [deg].
        intensity: ``[p]`` intensities (strongest = 100 when normalised).
        d_spacing: ``[p]`` d [Å].
        hkls: per peak, a list of ``((h, k, l), multiplicity)`` families.
        wavelength: λ [Å].
    """

    two_theta: np.ndarray
    intensity: np.ndarray
    d_spacing: np.ndarray
    hkls: list
    wavelength: float

    def to_dict(self) -> dict:
        """JSON-ready dict: ``wavelength`` and ``peaks`` (``two_theta``, ``intensity``, ``d_spacing``, ``hkl``).

        Each peak's ``hkl`` lists its families as ``{"hkl": [h, k, l], "multiplicity": m}``.
        Top-level arrays ``two_theta`` and ``intensity`` repeat the peak values.
        """
        peaks = [{"two_theta": float(t), "intensity": float(i), "d_spacing": float(d),
                  "hkl": [{"hkl": list(h), "multiplicity": int(m)} for h, m in fam]}
                 for t, i, d, fam in zip(self.two_theta, self.intensity, self.d_spacing, self.hkls)]
        return {"wavelength": self.wavelength, "two_theta": [float(t) for t in self.two_theta],
                "intensity": [float(i) for i in self.intensity],
                "hkl": [[list(h) for h, _ in fam] for fam in self.hkls], "peaks": peaks}

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)


def crystal_from_pymatgen(structure) -> tuple[Crystal, np.ndarray]:
    """Crystal and occupancies ``[n]`` from a pymatgen Structure (disordered sites split per species)."""
    nums, frac, occ = [], [], []
    for site in structure:
        for sp, o in site.species.items():
            nums.append(int(sp.Z))
            frac.append(site.frac_coords)
            occ.append(float(o))
    if not nums:
        raise StructureError("empty structure: no atoms")
    ordered = all(abs(o - 1) < 1e-12 for o in occ)
    c = Crystal.create(nums, np.array(frac), structure.lattice.matrix, validate=ordered)
    if not ordered:  # shared sites: skip the overlap check, still check the rest
        lat = np.asarray(c.lattice)
        if not np.all(np.isfinite(lat)) or np.linalg.det(lat) <= 0:
            raise StructureError("singular or left-handed lattice")
    return c, np.array(occ)


def load_structure(source) -> tuple[Crystal, np.ndarray]:
    """Read a structure file (CIF, POSCAR, ...) or take a Crystal / pymatgen Structure.

    Uses :func:`difcrys.io.read` (files and built-in example names); structures with
    partially occupied sites, which that reader rejects, are read with pymatgen.
    Returns the crystal and its occupancies ``[n]``.
    """
    if isinstance(source, Crystal):
        return source, np.ones(source.n_atoms) * np.asarray(source.mask)
    if hasattr(source, "lattice") and hasattr(source, "species"):
        return crystal_from_pymatgen(source)
    from pathlib import Path

    from difcrys import io as dio
    from difcrys.errors import FileFormatError

    try:
        c = dio.read(str(source))
        return c, np.ones(c.n_atoms) * np.asarray(c.mask)
    except (FileFormatError, StructureError) as e:
        # difcrys.io rejects partially occupied sites; XRD handles them as occupancies
        p = Path(str(source))
        if "partial occupancy" not in str(e) or not p.is_file():
            raise
    try:
        from pymatgen.core import Structure

        s = Structure.from_file(str(p))
    except Exception as e:  # noqa: BLE001 - any parser failure is a format error for the user
        raise FileFormatError(f"cannot read structure from {source}: {e}") from e
    return crystal_from_pymatgen(s)


def pad_numpy(crystal: Crystal, n_max: int) -> Crystal:
    """Pad a single crystal to ``n_max`` atoms with NumPy leaves (no eager device ops)."""
    n = crystal.n_atoms
    k = n_max - n
    return Crystal(numbers=np.concatenate([np.asarray(crystal.numbers, np.int32), np.zeros(k, np.int32)]),
                   frac=np.concatenate([np.asarray(crystal.frac, float), np.zeros((k, 3))]),
                   lattice=np.asarray(crystal.lattice, float),
                   mask=np.concatenate([np.asarray(crystal.mask, bool), np.zeros(k, bool)]))


def bucket(n: int) -> int:
    """Static capacity for ``n`` items: the next of 32·1.5^k (limits jit recompilations)."""
    c = 32
    while c < n:
        c = int(c * 1.5)
    return c


def _check_inputs(crystal: Crystal, table: str, occupancy=None):
    if np.asarray(crystal.numbers).ndim != 1:
        raise StructureError("expected a single crystal, got a batch")
    if not np.all(np.isfinite(np.asarray(crystal.frac))) or not np.all(np.isfinite(np.asarray(crystal.lattice))):
        raise StructureError("crystal contains NaN or infinite coordinates/lattice")
    if abs(np.linalg.det(np.asarray(crystal.lattice))) < 1e-8:
        raise StructureError("singular lattice")
    check_elements(crystal.numbers, table)
    if occupancy is not None:
        o = np.asarray(occupancy, float)
        if o.shape != np.asarray(crystal.numbers).shape or not np.all(np.isfinite(o)) or np.any(o < 0):
            raise StructureError(f"occupancy must be [n] finite and >= 0, got {o!r}")


@functools.partial(jax.jit, static_argnames=("table",))
def _intensities_jit(crystal, hkl, mask, lam, lo, hi, B, occ, cthm, table):
    refl = Reflections(hkl=hkl, mask=mask, group=jnp.zeros(hkl.shape[0], jnp.int32),
                       rep=jnp.zeros(1, jnp.int32), group_mask=jnp.zeros(1, bool))
    return reflection_intensities(crystal, refl, lam, B=B, occupancy=occ, cthm=cthm, table=table,
                                  two_theta_range=(lo, hi))


@dataclasses.dataclass
class _Prepared:
    crystal: Crystal
    occ: np.ndarray
    B: np.ndarray
    refl: Reflections


def _prepare(structure, lam, lo, hi, tname, B, occupancy) -> _Prepared:
    crystal, occ0 = load_structure(structure)
    occ = occ0 if occupancy is None else np.asarray(occupancy, float)
    _check_inputs(crystal, tname, occ)
    Bv = np.zeros(crystal.n_atoms) if B is None else np.broadcast_to(np.asarray(B, float), (crystal.n_atoms,))
    if not np.all(np.isfinite(Bv)):
        raise ConfigError("B factors must be finite")
    return _Prepared(crystal, occ, np.array(Bv, float), reflections(crystal, lam, (lo, hi)))


def _padded_inputs(preps: list[_Prepared], na: int, cap: int):
    crys = [pad_numpy(p.crystal, na) for p in preps]
    refl = [pad_reflections(p.refl, cap, p.refl.n_groups) for p in preps]
    B = np.stack([np.concatenate([p.B, np.zeros(na - len(p.B))]) for p in preps])
    occ = np.stack([np.concatenate([p.occ, np.zeros(na - len(p.occ))]) for p in preps])
    stack = lambda *xs: np.stack(xs)  # noqa: E731
    return (jax.tree_util.tree_map(stack, *crys), np.stack([r.hkl for r in refl]),
            np.stack([r.mask for r in refl]), B, occ)


def _peak_table(prep: _Prepared, tt, I, lam, normalize, min_intensity) -> PeakTable:
    refl, crystal = prep.refl, prep.crystal
    G = int(np.asarray(refl.group_mask).sum())
    empty = PeakTable(np.zeros(0), np.zeros(0), np.zeros(0), [], lam)
    if G == 0:
        return empty
    m = refl.capacity
    tt, I = np.asarray(tt)[:m], np.asarray(I)[:m]
    grp = np.asarray(refl.group)
    Ig = np.zeros(refl.n_groups + 1)
    np.add.at(Ig, grp, I)  # the same per-group sum as pattern.stick_pattern, on the host
    Ig = Ig[:G]
    rep = np.asarray(refl.rep)[:G]
    Imax = Ig.max()
    if not Imax > 0:
        return empty
    keep = Ig / Imax * 100 > min_intensity
    if normalize:
        Ig = 100.0 * Ig / Imax
    hkl = np.asarray(refl.hkl).astype(int)
    d = 1.0 / np.linalg.norm(hkl[rep] @ np.linalg.inv(np.asarray(crystal.lattice)).T, axis=1)
    hexa = is_hexagonal(np.asarray(crystal.lattice))
    order = np.argsort(grp, kind="stable")
    bounds = np.searchsorted(grp[order], np.arange(G + 1))
    fams = []
    for gi in np.where(keep)[0]:
        members = hkl[order[bounds[gi]:bounds[gi + 1]]]
        fams.append(hkl_families(np.concatenate([members, -members]), hexagonal=hexa))
    return PeakTable(two_theta=tt[rep][keep], intensity=Ig[keep], d_spacing=d[keep], hkls=fams, wavelength=lam)


@functools.partial(jax.jit, static_argnames=("table",))
def _batched_intensities(crystal, hkl, mask, lam, lo, hi, B, occ, cthm, table):
    fn = functools.partial(_intensities_jit.__wrapped__, table=table)
    return jax.vmap(fn, in_axes=(0, 0, 0, None, None, None, 0, 0, None))(crystal, hkl, mask, lam, lo, hi, B, occ,
                                                                           cthm)


def xrd_peaks(structure, wavelength="CuKa", two_theta_range=(0.0, 90.0), *, table: str = "doyle_turner",
              B=None, occupancy=None, cthm: float = 1.0, normalize: bool = True,
              min_intensity: float = SCALED_INTENSITY_TOL) -> PeakTable:
    """Stick pattern of a structure as a :class:`PeakTable` (host wrapper of :func:`stick_pattern`).

    Reflections are enumerated on the host, intensities computed by a jitted
    :func:`~difcrys.xrd.pattern.reflection_intensities` (capacities bucketed to limit
    recompilation), coinciding reflections summed per peak, and peaks weaker than
    ``min_intensity`` (of 100) dropped, as pymatgen's ``XRDCalculator`` does.

    Args:
        structure: Crystal, pymatgen Structure or a structure file path.
        wavelength: λ [Å] or radiation name (default ``"CuKa"`` = 1.54184 Å).
        two_theta_range: ``(min, max)`` [deg].
        table: ``"doyle_turner"`` (pymatgen-compatible) or ``"waasmaier_kirfel"``.
        B: isotropic B [Å²], scalar or ``[n]``; None = no Debye–Waller factor.
        occupancy: ``[n]`` occupancies (default: those of the structure).
        cthm: polarisation constant (1 = unpolarised beam).
        normalize: strongest peak = 100.
        min_intensity: drop peaks below this (relative to a max of 100).

    Raises:
        ConfigError: wavelength <= 0, empty/inverted 2θ range, unknown table.
        StructureError / ElementError: invalid structure, element without coefficients.
    """
    return xrd_peaks_batch([structure], wavelength, two_theta_range, table=table, B=B, occupancy=occupancy,
                           cthm=cthm, normalize=normalize, min_intensity=min_intensity)[0]


def xrd_peaks_batch(structures, wavelength="CuKa", two_theta_range=(0.0, 90.0), *, table: str = "doyle_turner",
                    B=None, occupancy=None, cthm: float = 1.0, normalize: bool = True,
                    min_intensity: float = SCALED_INTENSITY_TOL) -> list[PeakTable]:
    """Stick patterns of many structures with one vmapped, jitted call (see :func:`xrd_peaks`).

    All crystals are padded to common atom and reflection capacities (bucketed), so a
    batch compiles once. ``B`` and ``occupancy`` apply to every structure when given.
    """
    lam = radiation.wavelength(wavelength)
    lo, hi = radiation.two_theta_range(two_theta_range)
    tname = table_name(table)
    preps = [_prepare(s, lam, lo, hi, tname, B, occupancy) for s in structures]
    if not preps:
        return []
    na = -(-max(p.crystal.n_atoms for p in preps) // 8) * 8
    cap = bucket(max(p.refl.capacity for p in preps))
    if len(preps) == 1:
        c, hkl, mask, Bv, occ = _padded_inputs(preps, na, cap)
        one = lambda x: x[0]  # noqa: E731
        tt, I = _intensities_jit(jax.tree_util.tree_map(one, c), hkl[0], mask[0], lam, lo, hi, Bv[0], occ[0], cthm,
                                 tname)
        tt, I = np.asarray(tt)[None], np.asarray(I)[None]
    else:
        c, hkl, mask, Bv, occ = _padded_inputs(preps, na, cap)
        tt, I = _batched_intensities(c, hkl, mask, lam, lo, hi, Bv, occ, cthm, table=tname)
        tt, I = np.asarray(tt), np.asarray(I)
    return [_peak_table(p, tt[i], I[i], lam, normalize, min_intensity) for i, p in enumerate(preps)]


def simulate_profile(structure, two_theta, wavelength="CuKa", *, doublet: bool = False, profile: Profile | None = None,
                     shape: str = "pseudo_voigt", table: str = "doyle_turner", B=None, occupancy=None,
                     scale: float = 1.0, background=None, cthm: float = 1.0) -> np.ndarray:
    """Continuous pattern of a structure on a 2θ grid (host wrapper of :func:`powder_pattern`).

    Args:
        structure: Crystal, pymatgen Structure or path.
        two_theta: ``[N]`` increasing grid [deg].
        wavelength: λ or name; with ``doublet=True`` the anode's Kα1/Kα2 pair (ratio 0.5).
        profile, shape, table, B, occupancy, scale, background, cthm: see :func:`powder_pattern`.

    Returns:
        ``[N]`` numpy intensities.
    """
    grid = np.asarray(two_theta, float)
    if grid.ndim != 1 or grid.size < 2 or not np.all(np.isfinite(grid)) or np.any(np.diff(grid) <= 0):
        raise ConfigError("2θ grid must be a finite, strictly increasing 1-D array with >= 2 points")
    radiation.two_theta_range((grid[0], grid[-1]))
    if doublet:
        lams, wts = radiation.kalpha_doublet(wavelength if isinstance(wavelength, str) else "Cu")
    else:
        lams, wts = (radiation.wavelength(wavelength),), (1.0,)
    crystal, occ0 = load_structure(structure)
    occ = occ0 if occupancy is None else np.asarray(occupancy, float)
    _check_inputs(crystal, table_name(table), occ)
    pad = 2.0  # degrees beyond the grid so that tails of nearby peaks are included
    hi = min(grid[-1] + pad, 179.0)
    refl = reflections(crystal, min(lams), (0.0, hi))
    return np.asarray(_profile_jit(crystal, refl, grid, tuple(lams), tuple(wts), profile or Profile(), shape, scale,
                                   None if background is None else np.asarray(background, float),
                                   None if B is None else np.asarray(B, float), np.asarray(occ, float),
                                   table_name(table), cthm))


@functools.partial(jax.jit, static_argnums=(3, 4, 6, 11))
def _profile_jit(crystal, refl, grid, lams, wts, profile, shape, scale, background, B, occ, table, cthm):
    return powder_pattern(crystal, refl, grid, lams, wts, profile=profile, shape=shape, scale=scale,
                          background=background, B=B, occupancy=occ, table=table, cthm=cthm)


def symbols_of(crystal: Crystal) -> list[str]:
    """Element symbols of the real atoms."""
    return [chemical_symbol(int(z)) for z in np.asarray(crystal.numbers)[np.asarray(crystal.mask)]]
