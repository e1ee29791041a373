"""The crystal representation M = (A, X, L) shared by every difcrys component.

A :class:`Crystal` holds atomic numbers ``A`` (``numbers [n]``), fractional
coordinates ``X`` (``frac [n, 3]``) and the lattice ``L`` (``lattice [3, 3]``,
lattice vectors as **rows**, Å), plus a ``mask [n]`` marking real atoms.
Cartesian positions are ``C = X L`` (Å). It is a frozen dataclass registered as
a JAX pytree, so it passes through ``jit``, ``vmap`` and ``grad``; a batch is a
Crystal whose leaves have a leading batch axis, padded to a common size
(padding atoms have ``numbers == 0`` and ``mask == False``).

Host-side helpers (validation, supercells, padding) work on concrete arrays
and raise :class:`difcrys.errors.StructureError` with a readable message.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.errors import ElementError, StructureError

MIN_DISTANCE_ANG = 0.5  # atoms closer than this are rejected as overlapping

CRYSTAL_SYSTEMS = (
    "triclinic",
    "monoclinic",
    "orthorhombic",
    "tetragonal",
    "trigonal",
    "hexagonal",
    "cubic",
)

# The 14 Bravais lattices, Pearson-style symbols (aP, mP, mC, oP, oC, oI, oF,
# tP, tI, hR, hP, cP, cI, cF). "oC" covers the A/B/C-centred settings.
BRAVAIS_LATTICES = (
    "aP", "mP", "mC", "oP", "oC", "oI", "oF", "tP", "tI", "hR", "hP", "cP", "cI", "cF",
)


def _symbols():
    from ase.data import chemical_symbols

    return chemical_symbols


def atomic_number(symbol_or_z) -> int:
    """Atomic number of an element symbol (``"Si"``) or integer; raises ElementError."""
    symbols = _symbols()
    if isinstance(symbol_or_z, (int, np.integer)):
        z = int(symbol_or_z)
        if 1 <= z < len(symbols):
            return z
        raise ElementError(f"unknown element: atomic number {z} (valid: 1..{len(symbols) - 1})")
    s = str(symbol_or_z).strip()
    if s.isdigit():
        return atomic_number(int(s))
    s = s[:1].upper() + s[1:].lower()
    if s in symbols[1:]:
        return symbols.index(s)
    raise ElementError(f"unknown element symbol {symbol_or_z!r}")


def chemical_symbol(z: int) -> str:
    """Element symbol for atomic number ``z``."""
    return _symbols()[atomic_number(int(z))]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Crystal:
    """A periodic crystal M = (A, X, L).

    Attributes:
        numbers: ``[n]`` int atomic numbers (0 for padding).
        frac: ``[n, 3]`` fractional coordinates.
        lattice: ``[3, 3]`` lattice vectors as rows [Å].
        mask: ``[n]`` bool, True for real atoms.
    """

    numbers: jax.Array
    frac: jax.Array
    lattice: jax.Array
    mask: jax.Array

    # ------------------------------------------------------------------ build
    @classmethod
    def create(cls, numbers, frac, lattice, mask=None, validate: bool = True) -> "Crystal":
        """Build a crystal from atomic numbers (or symbols), fractional coords and lattice rows [Å].

        Args:
            numbers: ``[n]`` atomic numbers or element symbols.
            frac: ``[n, 3]`` fractional coordinates.
            lattice: ``[3, 3]`` lattice vectors as rows [Å].
            mask: optional ``[n]`` bool; default all True.
            validate: run :func:`validate` (host-side checks) before returning.
        """
        raw = list(np.atleast_1d(np.asarray(numbers, dtype=object)).ravel())
        numbers = np.array(
            [0 if isinstance(z, (int, np.integer)) and int(z) == 0 else atomic_number(z) for z in raw],
            dtype=np.int32)
        frac = np.asarray(frac, dtype=float).reshape(-1, 3)
        lattice = np.asarray(lattice, dtype=float)
        if mask is None:
            mask = numbers > 0
        c = cls(
            numbers=jnp.asarray(numbers, dtype=jnp.int32),
            frac=jnp.asarray(frac),
            lattice=jnp.asarray(lattice),
            mask=jnp.asarray(np.asarray(mask, dtype=bool)),
        )
        if validate:
            c.validate()
        return c

    @classmethod
    def from_cartesian(cls, numbers, positions, lattice, **kw) -> "Crystal":
        """Build a crystal from cartesian positions [Å] (``X = C L^{-1}``)."""
        lattice = np.asarray(lattice, dtype=float)
        if lattice.shape != (3, 3) or not np.all(np.isfinite(lattice)):
            raise StructureError(f"lattice must be a finite 3x3 matrix, got {lattice!r}")
        if abs(np.linalg.det(lattice)) < 1e-8:
            raise StructureError("singular lattice: the three lattice vectors are linearly dependent (volume ~ 0)")
        frac = np.asarray(positions, dtype=float).reshape(-1, 3) @ np.linalg.inv(lattice)
        return cls.create(numbers, frac, lattice, **kw)

    @classmethod
    def from_parameters(cls, numbers, frac, a, b, c, alpha, beta, gamma, **kw) -> "Crystal":
        """Build from lattice parameters (Å, degrees) in the standard orientation (a ∥ x, b in xy)."""
        return cls.create(numbers, frac, lattice_from_parameters(a, b, c, alpha, beta, gamma), **kw)

    # ------------------------------------------------------------- geometry
    @property
    def n_atoms(self) -> int:
        """Number of atom slots (including padding)."""
        return self.numbers.shape[-1]

    @property
    def n_real(self):
        """Number of real (unmasked) atoms."""
        return jnp.sum(self.mask, axis=-1)

    @property
    def positions(self) -> jax.Array:
        """Cartesian positions ``C = X L`` ``[n, 3]`` [Å]."""
        return jnp.einsum("...ni,...ij->...nj", self.frac, self.lattice)

    cart = positions

    @property
    def volume(self) -> jax.Array:
        """Cell volume ``det L`` [Å^3] (positive for right-handed cells)."""
        return jnp.linalg.det(self.lattice)

    def reciprocal_lattice(self, two_pi: bool = True) -> jax.Array:
        """Reciprocal lattice vectors as rows, ``B = 2π L^{-T}`` [1/Å] (``a_i·b_j = 2π δ_ij``)."""
        b = jnp.swapaxes(jnp.linalg.inv(self.lattice), -1, -2)
        return 2 * jnp.pi * b if two_pi else b

    def lattice_parameters(self) -> jax.Array:
        """``[a, b, c, α, β, γ]`` in Å and degrees."""
        return lattice_parameters(self.lattice)

    def wrap(self) -> "Crystal":
        """Wrap fractional coordinates into [0, 1)."""
        f = self.frac - jnp.floor(self.frac)
        f = jnp.where(f >= 1.0, f - 1.0, f)
        return dataclasses.replace(self, frac=f)

    def strain(self, eps) -> "Crystal":
        """Apply a homogeneous strain ``L' = L (I + ε)``; fractional coordinates are kept.

        ``eps`` is a ``[3, 3]`` (symmetric for pure strain) matrix. Differentiable.
        """
        eps = jnp.asarray(eps)
        return dataclasses.replace(self, lattice=self.lattice @ (jnp.eye(3) + eps))

    def replace(self, **kw) -> "Crystal":
        return dataclasses.replace(self, **kw)

    def numpy(self) -> "Crystal":
        """A copy with NumPy leaves (host-side use)."""
        return jax.tree_util.tree_map(np.asarray, self)

    # ---------------------------------------------------------------- host
    def unpadded(self) -> "Crystal":
        """Drop padding atoms (host-side, single crystal)."""
        m = np.asarray(self.mask)
        return Crystal(
            numbers=jnp.asarray(np.asarray(self.numbers)[m]),
            frac=jnp.asarray(np.asarray(self.frac)[m]),
            lattice=self.lattice,
            mask=jnp.asarray(np.ones(int(m.sum()), bool)),
        )

    @property
    def symbols(self) -> list[str]:
        """Element symbols of the real atoms."""
        return [chemical_symbol(z) for z, m in zip(np.asarray(self.numbers), np.asarray(self.mask)) if m]

    @property
    def formula(self) -> str:
        """Reduced-order Hill-like formula in order of first appearance, e.g. ``Si2``, ``BaTiO3``."""
        counts: dict[str, int] = {}
        for s in self.symbols:
            counts[s] = counts.get(s, 0) + 1
        return "".join(f"{s}{n if n > 1 else ''}" for s, n in counts.items())

    def density(self) -> float:
        """Mass density [g/cm^3]."""
        from ase.data import atomic_masses

        from difcrys.units import AMU_G, ANG3_CM3

        mass = sum(atomic_masses[z] for z, m in zip(np.asarray(self.numbers), np.asarray(self.mask)) if m)
        return float(mass * AMU_G / (abs(float(np.linalg.det(np.asarray(self.lattice)))) * ANG3_CM3))

    def validate(self, min_distance: float = MIN_DISTANCE_ANG) -> "Crystal":
        """Host-side checks with readable errors; returns self.

        Raises:
            StructureError: empty structure, wrong shapes, NaN/inf, singular or
                left-handed lattice, atoms closer than ``min_distance`` Å
                (periodic images included).
            ElementError: an atomic number outside 1..118.
        """
        numbers = np.asarray(self.numbers)
        frac = np.asarray(self.frac, dtype=float)
        lattice = np.asarray(self.lattice, dtype=float)
        mask = np.asarray(self.mask, dtype=bool)
        if numbers.ndim != 1:
            raise StructureError("validate() works on a single crystal; got a batch")
        if frac.shape != (numbers.shape[0], 3) or mask.shape != numbers.shape:
            raise StructureError(f"shape mismatch: numbers {numbers.shape}, frac {frac.shape}, mask {mask.shape}")
        if lattice.shape != (3, 3):
            raise StructureError(f"lattice must be 3x3, got shape {lattice.shape}")
        if not mask.any():
            raise StructureError("empty structure: no atoms")
        if not np.all(np.isfinite(lattice)):
            raise StructureError("lattice contains NaN or infinite values")
        if not np.all(np.isfinite(frac[mask])):
            bad = np.where(~np.all(np.isfinite(frac), axis=1) & mask)[0]
            raise StructureError(f"NaN or infinite coordinate for atom(s) {bad.tolist()}")
        for z in numbers[mask]:
            atomic_number(int(z))
        det = np.linalg.det(lattice)
        lengths = np.linalg.norm(lattice, axis=1)
        if abs(det) < 1e-6 * max(float(np.prod(lengths)), 1e-30) or np.any(lengths < 1e-8):
            raise StructureError(
                f"singular lattice: the lattice vectors are (nearly) linearly dependent (volume {det:.3g} Å^3)")
        if det < 0:
            raise StructureError(
                f"left-handed lattice (det L = {det:.4g} < 0); swap two lattice vectors or negate one")
        dmin, pair = min_image_distance(frac[mask], lattice)
        if dmin < min_distance:
            i, j = pair
            raise StructureError(
                f"overlapping atoms: atoms {i} and {j} are {dmin:.3f} Å apart (< {min_distance} Å)")
        return self


def min_image_distance(frac: np.ndarray, lattice: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Smallest interatomic distance [Å] over all periodic images (host-side) and the pair.

    Exact for distances up to ``max(4 MIN_DISTANCE_ANG, 1 Å)`` (the images reaching that far are
    included; larger minima are upper bounds, which is all validation needs). A k-d tree over the
    periodic images (``scipy.spatial.cKDTree``) keeps it O(N log N): 32,768 atoms take about a
    second instead of an O(N²) scan.
    """
    from scipy.spatial import cKDTree

    frac = np.asarray(frac, float)
    lattice = np.asarray(lattice, float)
    n = len(frac)
    inv = np.linalg.inv(lattice)
    heights = 1.0 / np.linalg.norm(inv, axis=0)
    reach = max(MIN_DISTANCE_ANG * 4, 1.0)
    nrep = np.ceil(reach / heights).astype(int)
    rng = [np.arange(-k, k + 1) for k in nrep]
    shifts = np.stack(np.meshgrid(*rng, indexing="ij"), -1).reshape(-1, 3)
    s0 = int(np.where(np.all(shifts == 0, axis=1))[0][0])
    cart = (frac - np.floor(frac)) @ lattice
    images = (cart[None, :, :] + (shifts @ lattice)[:, None, :]).reshape(-1, 3)  # [s * n + j]
    k = min(3, len(images))
    dist, idx = cKDTree(images).query(cart, k=k)
    dist, idx = dist.reshape(n, k), idx.reshape(n, k)
    dist = np.where(idx == s0 * n + np.arange(n)[:, None], np.inf, dist)  # each atom itself
    i, c = np.unravel_index(np.argmin(dist), dist.shape)
    if not np.isfinite(dist[i, c]):
        return float("inf"), (0, 0)
    return float(dist[i, c]), (int(i), int(idx[i, c] % n))


def lattice_from_parameters(a, b, c, alpha, beta, gamma) -> np.ndarray:
    """Lattice rows [Å] from (a, b, c [Å], α, β, γ [deg]); a along x, b in the xy plane."""
    al, be, ga = (math.radians(x) for x in (alpha, beta, gamma))
    for name, v in (("a", a), ("b", b), ("c", c)):
        if not v > 0:
            raise StructureError(f"lattice parameter {name} must be > 0, got {v}")
    cx = c * math.cos(be)
    cy = c * (math.cos(al) - math.cos(be) * math.cos(ga)) / math.sin(ga)
    cz2 = c * c - cx * cx - cy * cy
    if not cz2 > 0:
        raise StructureError(f"impossible lattice angles α={alpha}, β={beta}, γ={gamma}: singular lattice")
    return np.array([[a, 0.0, 0.0], [b * math.cos(ga), b * math.sin(ga), 0.0], [cx, cy, math.sqrt(cz2)]])


def lattice_parameters(lattice) -> jax.Array:
    """``[a, b, c, α, β, γ]`` (Å, degrees) of lattice rows; differentiable."""
    lattice = jnp.asarray(lattice)
    a, b, c = (jnp.linalg.norm(lattice[..., i, :], axis=-1) for i in range(3))

    def ang(u, v, nu, nv):
        cos = jnp.sum(u * v, axis=-1) / (nu * nv)
        return jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))

    l0, l1, l2 = lattice[..., 0, :], lattice[..., 1, :], lattice[..., 2, :]
    return jnp.stack([a, b, c, ang(l1, l2, b, c), ang(l0, l2, a, c), ang(l0, l1, a, b)], axis=-1)


def supercell(crystal: Crystal, matrix) -> Crystal:
    """Supercell with lattice ``L' = P L`` for an integer matrix ``P`` (or 3 repeats).

    Atom ordering: for each original atom, its images in lexicographic order of
    the translation. Host-side (the output size depends on ``det P``).
    """
    P = np.asarray(matrix, dtype=int)
    if P.shape == (3,):
        P = np.diag(P)
    det = int(round(np.linalg.det(P)))
    if P.shape != (3, 3) or det <= 0:
        raise StructureError(f"supercell matrix must be 3x3 integer with positive determinant, got {P.tolist()}")
    c = crystal.unpadded()
    frac = np.asarray(c.frac, float)
    lattice = np.asarray(c.lattice, float)
    new_lat = P @ lattice
    # candidate translations: corners of P mapped back into the original basis
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) @ P
    lo, hi = corners.min(0), corners.max(0)
    rng = [np.arange(lo[d], hi[d] + 1) for d in range(3)]
    T = np.stack(np.meshgrid(*rng, indexing="ij"), -1).reshape(-1, 3)
    Pinv = np.linalg.inv(P)
    nums, fr = [], []
    for z, f in zip(np.asarray(c.numbers), frac):
        g = (f[None, :] + T) @ Pinv  # fractional in new cell
        keep = np.all((g >= -1e-8) & (g < 1 - 1e-8), axis=1)
        g = g[keep]
        g = g - np.floor(g + 1e-12)
        nums += [int(z)] * len(g)
        fr.append(g)
    fr = np.concatenate(fr, 0)
    if len(nums) != det * c.n_atoms:
        raise StructureError(f"supercell construction found {len(nums)} atoms, expected {det * c.n_atoms}")
    return Crystal.create(nums, fr, new_lat, validate=False)


def pad(crystal: Crystal, n_max: int) -> Crystal:
    """Pad a single crystal to ``n_max`` atom slots (padding: number 0, frac 0, mask False)."""
    n = crystal.n_atoms
    if n > n_max:
        raise StructureError(f"cannot pad {n} atoms to {n_max} slots")
    k = n_max - n
    return Crystal(
        numbers=jnp.concatenate([jnp.asarray(crystal.numbers), jnp.zeros((k,), jnp.int32)]),
        frac=jnp.concatenate([jnp.asarray(crystal.frac), jnp.zeros((k, 3), jnp.asarray(crystal.frac).dtype)]),
        lattice=jnp.asarray(crystal.lattice),
        mask=jnp.concatenate([jnp.asarray(crystal.mask), jnp.zeros((k,), bool)]),
    )


def batch(crystals: Sequence[Crystal], n_max: int | None = None) -> Crystal:
    """Stack crystals into one batched Crystal, padding each to ``n_max`` atoms (default: largest)."""
    if len(crystals) == 0:
        raise StructureError("cannot batch an empty list of crystals")
    n_max = n_max or max(c.n_atoms for c in crystals)
    padded = [pad(c, n_max) for c in crystals]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *padded)


def unbatch(batched: Crystal) -> list[Crystal]:
    """Split a batched Crystal into unpadded single crystals (host-side)."""
    nb = np.asarray(batched.numbers).shape[0]
    out = []
    for b in range(nb):
        c = jax.tree_util.tree_map(lambda x: x[b], batched)
        out.append(c.unpadded())
    return out


def crystal_system(spacegroup_number: int) -> str:
    """Crystal system (one of :data:`CRYSTAL_SYSTEMS`) of a space group number 1..230."""
    n = int(spacegroup_number)
    if not 1 <= n <= 230:
        raise StructureError(f"space group number must be 1..230, got {n}")
    for hi, name in ((2, "triclinic"), (15, "monoclinic"), (74, "orthorhombic"), (142, "tetragonal"),
                     (167, "trigonal"), (194, "hexagonal"), (230, "cubic")):
        if n <= hi:
            return name
    raise AssertionError


def bravais_lattice(spacegroup_number: int, spacegroup_symbol: str) -> str:
    """Bravais lattice (Pearson symbol, one of :data:`BRAVAIS_LATTICES`) from space group number and
    Hermann–Mauguin symbol (its first letter is the centring)."""
    system = crystal_system(spacegroup_number)
    centring = spacegroup_symbol.strip()[0].upper()
    letter = {"triclinic": "a", "monoclinic": "m", "orthorhombic": "o", "tetragonal": "t",
              "trigonal": "h", "hexagonal": "h", "cubic": "c"}[system]
    if centring in "ABC":
        centring = "C" if system in ("monoclinic", "orthorhombic") else centring
    if system == "trigonal" and centring == "R":
        return "hR"
    if system in ("trigonal", "hexagonal"):
        return "hP"
    sym = letter + centring
    if sym not in BRAVAIS_LATTICES:
        raise StructureError(f"inconsistent space group {spacegroup_number} {spacegroup_symbol!r}")
    return sym
