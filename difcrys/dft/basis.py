"""Plane-wave basis: k-points, the G-sphere per k, the FFT grid and symmetry maps (host-built, static).

Hartree atomic units. The basis of k-point ``k`` holds the plane waves
``e^{i(k+G)·r}/√Ω`` with ``|k+G|²/2 ≤ ecut`` (ABINIT's ``ecut`` convention). The
Miller indices of each sphere are fixed when the basis is built; they stay fixed
when the lattice is strained inside a derivative (the fixed-basis stress, as
ABINIT with ``ecutsm = 0``). Spheres are padded to a common size with a mask so
that all k-points batch with ``vmap``.

FFT grid: large enough to hold the density sphere of radius ``2 G_max``
(``G_max = √(2 ecut)``), i.e. ``N_i ≥ 2·⌊2 G_max |a_i|/2π⌋ + 1`` per direction,
rounded up to a product of 2, 3 and 5 (and to a multiple of the denominators of
the fractional translations of the space group so the density can be symmetrised),
or set explicitly with ``fft_shape``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from difcrys.errors import ConfigError


def good_fft_size(n: int, multiple_of: int = 1) -> int:
    """Smallest m ≥ n with only prime factors 2, 3, 5 and divisible by ``multiple_of``."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1 and m % multiple_of == 0:
            return m
        m += 1


def min_fft_shape(lattice_bohr, ecut: float, factor: float = 2.0) -> tuple[int, int, int]:
    """Minimal grid holding the sphere of radius ``factor·√(2 ecut)`` in each direction."""
    gmax = factor * math.sqrt(2 * ecut)
    L = np.asarray(lattice_bohr, float)
    mmax = np.floor(gmax * np.linalg.norm(L, axis=1) / (2 * np.pi) + 1e-9).astype(int)
    return tuple(int(2 * m + 1) for m in mmax)


def choose_fft_shape(lattice_bohr, ecut: float, translations=None) -> tuple[int, int, int]:
    """The default FFT grid: :func:`min_fft_shape` rounded to 2·3·5 sizes compatible with symmetry."""
    mult = [1, 1, 1]
    if translations is not None and len(translations):
        for d in range(3):
            for t in np.asarray(translations)[:, d]:
                t = t - round(t)
                if abs(t) > 1e-6:
                    den = _denominator(t)
                    mult[d] = mult[d] * den // math.gcd(mult[d], den)
    shape = [good_fft_size(n, m) for n, m in zip(min_fft_shape(lattice_bohr, ecut), mult)]
    # symmetry-equivalent directions must share a size; equal lengths get the max
    L = np.asarray(lattice_bohr, float)
    lens = np.linalg.norm(L, axis=1)
    for i in range(3):
        for j in range(3):
            if abs(lens[i] - lens[j]) < 1e-6 * lens[i]:
                shape[i] = shape[j] = max(shape[i], shape[j])
    return tuple(int(s) for s in shape)


def _denominator(t: float, max_den: int = 12) -> int:
    for den in range(1, max_den + 1):
        if abs(t * den - round(t * den)) < 1e-5:
            return den
    return 1


@dataclasses.dataclass(frozen=True)
class PlaneWaveBasis:
    """Static description of the plane-wave discretisation (NumPy arrays, host-built).

    Attributes:
        ecut: kinetic cutoff [Ha].
        fft_shape: ``(N1, N2, N3)``.
        kpts: ``[nk, 3]`` k-points in reciprocal fractional coordinates.
        weights: ``[nk]`` k-point weights, summing to 1.
        miller: ``[nk, npw, 3]`` Miller indices of each sphere (padded).
        mask: ``[nk, npw]`` True for real plane waves.
        fft_index: ``[nk, npw]`` flat index of each plane wave on the FFT grid.
        npw: ``[nk]`` number of plane waves per k.
        sym_index: ``[nsym, Ngrid]`` int32 for density symmetrisation: flat grid index of ``R^{-T} G``
            (−1 where it leaves the grid).
        sym_trans: ``[nsym, 3]`` fractional translations ``t`` (the phase ``e^{2πi (R^{-T}G)·t}`` is
            computed when needed: storing it for every operation and grid point costs
            16 bytes × nsym × Ngrid, gigabytes for symmetric supercells).
    """

    ecut: float
    fft_shape: tuple
    kpts: np.ndarray
    weights: np.ndarray
    miller: np.ndarray
    mask: np.ndarray
    fft_index: np.ndarray
    npw: np.ndarray
    sym_index: np.ndarray | None = None
    sym_trans: np.ndarray | None = None

    @property
    def n_kpoints(self) -> int:
        return len(self.kpts)

    @property
    def n_grid(self) -> int:
        return int(np.prod(self.fft_shape))

    def grid_miller(self) -> np.ndarray:
        """``[N1, N2, N3, 3]`` integer Miller indices of the FFT grid (numpy ``fftfreq`` order)."""
        ax = [np.fft.fftfreq(n, 1.0 / n).round().astype(int) for n in self.fft_shape]
        return np.stack(np.meshgrid(*ax, indexing="ij"), -1)


def build_basis(lattice_bohr, ecut: float, kpts, weights, fft_shape=None, symops=None) -> PlaneWaveBasis:
    """Build the plane-wave basis for k-points ``kpts`` (reciprocal fractional) at cutoff ``ecut`` [Ha].

    Args:
        lattice_bohr: ``[3, 3]`` lattice rows [Bohr].
        ecut: kinetic-energy cutoff [Ha], > 0.
        kpts: ``[nk, 3]`` k-points (fractional reciprocal coordinates).
        weights: ``[nk]`` weights (normalised here to sum to 1).
        fft_shape: optional explicit ``(N1, N2, N3)``; must hold the density sphere.
        symops: optional ``(rotations [nsym,3,3] int, translations [nsym,3])`` in fractional
            coordinates (x' = R x + t), used to symmetrise densities from irreducible k-points.
    """
    if not ecut > 0:
        raise ConfigError(f"ecut must be > 0 Ha, got {ecut}")
    L = np.asarray(lattice_bohr, float)
    B = 2 * np.pi * np.linalg.inv(L).T
    kpts = np.asarray(kpts, float).reshape(-1, 3)
    weights = np.asarray(weights, float).reshape(-1)
    if len(kpts) == 0 or len(weights) != len(kpts):
        raise ConfigError("need at least one k-point and one weight per k-point")
    weights = weights / weights.sum()
    translations = None if symops is None else symops[1]
    if fft_shape is None:
        fft_shape = choose_fft_shape(L, ecut, translations)
    fft_shape = tuple(int(n) for n in fft_shape)
    # explicit grids may be one point smaller than the default (the ±m density components then share
    # the Nyquist plane, as ABINIT's boxcut ≥ 2 criterion allows)
    need = tuple(max(m - 1, 1) for m in min_fft_shape(L, ecut))
    if any(n < m for n, m in zip(fft_shape, need)):
        raise ConfigError(f"fft_shape {fft_shape} too small for ecut={ecut} Ha: need at least {need}")
    gmax = math.sqrt(2 * ecut)
    kmax = np.max(np.linalg.norm(kpts @ B, axis=1)) if len(kpts) else 0.0
    mrange = np.ceil((gmax + kmax) * np.linalg.norm(L, axis=1) / (2 * np.pi)).astype(int) + 1
    cand = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in mrange], indexing="ij"), -1).reshape(-1, 3)
    spheres = []
    for k in kpts:
        q = (k + cand) @ B
        sel = cand[0.5 * np.sum(q * q, 1) <= ecut + 1e-12]
        # deterministic order: by kinetic energy then lexicographic
        ekin = 0.5 * np.sum(((k + sel) @ B) ** 2, 1)
        order = np.lexsort((sel[:, 2], sel[:, 1], sel[:, 0], np.round(ekin, 10)))
        spheres.append(sel[order])
    npw = np.array([len(s) for s in spheres])
    npw_max = int(npw.max())
    miller = np.zeros((len(kpts), npw_max, 3), np.int32)
    mask = np.zeros((len(kpts), npw_max), bool)
    for i, s in enumerate(spheres):
        miller[i, : len(s)] = s
        mask[i, : len(s)] = True
    N = np.array(fft_shape)
    wrapped = np.mod(miller, N)
    fft_index = (wrapped[..., 0] * N[1] + wrapped[..., 1]) * N[2] + wrapped[..., 2]
    sym_index = sym_trans = None
    if symops is not None and len(symops[0]) > 1:
        sym_index = _symmetry_maps(fft_shape, symops)
        sym_trans = np.asarray(symops[1], float).reshape(-1, 3)
    return PlaneWaveBasis(float(ecut), fft_shape, kpts, weights, miller, mask, fft_index.astype(np.int32), npw,
                          sym_index, sym_trans)


def _symmetry_maps(fft_shape, symops):
    """Gather map (flat grid index of ``R^{-T} G``, −1 off the grid) for
    ``ρ_sym(G) = 1/N_S Σ_S ρ(R^{-T} G) e^{2πi (R^{-T}G)·t}``.

    For a symmetry ``x ↦ R x + t`` of the crystal, ``ρ(x) = ρ(R x + t)``; in Fourier
    components ``ρ(G') = ρ(G) e^{2πi G·t}`` with ``G' = R^T G``.
    """
    rots, trans = symops
    N = np.array(fft_shape)
    gm = np.stack(np.meshgrid(*[np.fft.fftfreq(n, 1.0 / n).round().astype(int) for n in fft_shape],
                              indexing="ij"), -1).reshape(-1, 3)
    half_lo = -(N // 2)
    half_hi = (N - 1) // 2
    idx = []
    for R in np.asarray(rots):
        RinvT = np.linalg.inv(R).T
        G = np.rint(gm @ RinvT.T).astype(int)  # R^{-T} G' for each grid G'
        ok = np.all((G >= half_lo) & (G <= half_hi), axis=1)
        w = np.mod(G, N)
        idx.append(np.where(ok, (w[:, 0] * N[1] + w[:, 1]) * N[2] + w[:, 2], -1))
    return np.array(idx, np.int32)
