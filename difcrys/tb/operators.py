"""Real-space localized-basis operators H(R), S(R) as blocks per atom pair and lattice translation.

Convention (that of DeePTB/DeepH and of PySCF's Bloch basis): block ``(i, j, R)`` is

    H_{iα,jβ}(R) = <φ_iα(r − τ_i) | Ĥ | φ_jβ(r − τ_j − R·L)>,   bond d = τ_j + R·L − τ_i,

and the Bloch sums at a fractional k-point are

    H_{iα,jβ}(k) = Σ_R H_{iα,jβ}(R) exp(2πi k·R),   S(k) likewise,

so that the band energies solve ``H(k) c = ε S(k) c`` (e.g. Li et al., "Deep-learning
density functional theory Hamiltonian for efficient ab initio electronic-structure
calculation", Nat. Comput. Sci. 2, 367 (2022), Eqs. 1–2). Hermiticity of the operator is
``H_ij(R) = H_ji(−R)^T`` (real blocks), which :meth:`TBOperator.check_hermitian` verifies.

Orbitals of each atom follow :mod:`difcrys.tb.orbitals` (e3nn-jax real spherical harmonic
order). Blocks are stored padded to the largest orbital count ``no`` of the basis.
Energies in eV; overlaps dimensionless.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np

from difcrys.crystal import Crystal
from difcrys.errors import DifcrysError, FileFormatError
from difcrys.tb.orbitals import OrbitalBasis, source_permutation

__all__ = ["BlockShapeError", "OverlapError", "TBOperator", "bloch_sum", "from_blocks"]


class BlockShapeError(DifcrysError, ValueError):
    """A Hamiltonian/overlap block does not have the shape given by the two atoms' orbitals."""


class OverlapError(DifcrysError, ValueError):
    """The overlap matrix S(k) is not positive definite (or too ill-conditioned to invert)."""


@dataclasses.dataclass
class TBOperator:
    """H(R) and S(R) of a structure in a localized basis.

    Attributes:
        crystal: the structure (NumPy leaves; lattice rows in Å).
        basis: :class:`OrbitalBasis` (element → shells).
        pairs: ``[P, 2]`` int atom indices ``(i, j)``.
        shifts: ``[P, 3]`` int lattice translation R of atom j.
        H: ``[P, no, no]`` Hamiltonian blocks [eV] (padded with zeros).
        S: ``[P, no, no]`` overlap blocks, or None for an orthogonal basis (S(R) = δ_R0 δ_ij).
        meta: free-form information (source, settings).
    """

    crystal: Crystal
    basis: OrbitalBasis
    pairs: np.ndarray
    shifts: np.ndarray
    H: np.ndarray
    S: np.ndarray | None
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.pairs = np.asarray(self.pairs, np.int64).reshape(-1, 2)
        self.shifts = np.asarray(self.shifts, np.int64).reshape(-1, 3)
        self.H = np.asarray(self.H, np.float64)
        n = len(np.asarray(self.crystal.numbers))
        self.orbitals = self.basis.orbitals_per_atom(self.crystal.numbers)  # raises for a missing element
        no = int(self.orbitals.max())
        P = len(self.pairs)
        if self.H.ndim != 3 or self.H.shape[0] != P:
            raise BlockShapeError(f"H has shape {self.H.shape}; expected [{P}, no, no] for {P} pairs")
        if self.H.shape[1:] != (no, no):
            raise BlockShapeError(f"H blocks have shape {self.H.shape[1:]}, but the basis "
                                  f"{self.basis.to_dict()} needs ({no}, {no}) (padded)")
        if self.S is not None:
            self.S = np.asarray(self.S, np.float64)
            if self.S.shape != self.H.shape:
                raise BlockShapeError(f"S has shape {self.S.shape} but H has {self.H.shape}")
        if P and (self.pairs.min() < 0 or self.pairs.max() >= n):
            raise BlockShapeError(f"pair indices outside 0..{n - 1}")
        for arr, name in ((self.H, "H"), (self.S, "S")):
            if arr is None:
                continue
            if not np.all(np.isfinite(arr)):
                raise BlockShapeError(f"{name} contains NaN or infinite values")
            # padded rows/columns must be zero
            oi, oj = self.orbitals[self.pairs[:, 0]], self.orbitals[self.pairs[:, 1]]
            ar = np.arange(no)
            pad = (ar[None, :, None] >= oi[:, None, None]) | (ar[None, None, :] >= oj[:, None, None])
            if np.any(arr[pad] != 0):
                raise BlockShapeError(f"{name} has nonzero entries outside the orbitals of its atoms")

    # ------------------------------------------------------------------ basic properties
    @property
    def n_atoms(self) -> int:
        return len(self.orbitals)

    @property
    def n_orbitals(self) -> int:
        """Total number of orbitals (matrix dimension)."""
        return int(self.orbitals.sum())

    @property
    def orbital_index(self) -> np.ndarray:
        """``[N]`` positions of the real orbitals in the padded ``n·no`` layout."""
        no = self.H.shape[1]
        return np.concatenate([i * no + np.arange(o) for i, o in enumerate(self.orbitals)])

    def bond_vectors(self) -> np.ndarray:
        """``[P, 3]`` bond vectors ``d = τ_j + R·L − τ_i`` [Å]."""
        L = np.asarray(self.crystal.lattice, float)
        pos = np.asarray(self.crystal.frac, float) @ L
        return pos[self.pairs[:, 1]] + self.shifts @ L - pos[self.pairs[:, 0]]

    def partner_index(self) -> np.ndarray:
        """``[P]`` index of the block ``(j, i, −R)`` of each block ``(i, j, R)``.

        Raises:
            BlockShapeError: a block has no partner (the operator cannot be Hermitian).
        """
        key = {(int(i), int(j), tuple(int(x) for x in R)): p
               for p, ((i, j), R) in enumerate(zip(self.pairs, self.shifts))}
        out = np.empty(len(self.pairs), np.int64)
        for p, ((i, j), R) in enumerate(zip(self.pairs, self.shifts)):
            q = key.get((int(j), int(i), tuple(-int(x) for x in R)))
            if q is None:
                raise BlockShapeError(f"block ({i}, {j}, {tuple(R)}) has no partner ({j}, {i}, {tuple(-R)})")
            out[p] = q
        return out

    def check_hermitian(self, atol: float = 1e-8) -> float:
        """Largest ``|H_ij(R) − H_ji(−R)^T|`` over H and S [eV]; raises if above ``atol``."""
        q = self.partner_index()
        err = float(np.abs(self.H - self.H[q].transpose(0, 2, 1)).max(initial=0.0))
        if self.S is not None:
            err = max(err, float(np.abs(self.S - self.S[q].transpose(0, 2, 1)).max(initial=0.0)))
        if err > atol:
            raise BlockShapeError(f"operator is not Hermitian: max |H_ij(R) − H_ji(−R)^T| = {err:.3g}")
        return err

    # ------------------------------------------------------------------ Bloch sums
    def bloch(self, kpts, which: str = "H"):
        """Dense ``[K, N, N]`` complex Bloch matrices at fractional ``kpts [K, 3]`` (JAX)."""
        blocks = self.H if which == "H" else self.S
        if blocks is None:
            kp = np.atleast_2d(kpts)
            return jnp.broadcast_to(jnp.eye(self.n_orbitals, dtype=complex), (len(kp), self.n_orbitals, self.n_orbitals))
        return bloch_sum(jnp.asarray(blocks), jnp.asarray(self.pairs), jnp.asarray(self.shifts),
                         jnp.asarray(np.atleast_2d(kpts), float), self.n_atoms, jnp.asarray(self.orbital_index))

    def sparse(self, k=(0.0, 0.0, 0.0)):
        """``(H(k), S(k))`` as ``scipy.sparse.csr_matrix`` (real at k = 0, complex otherwise)."""
        import scipy.sparse as sp

        k = np.asarray(k, float)
        gamma = np.allclose(k, 0.0)
        ph = np.ones(len(self.pairs)) if gamma else np.exp(2j * np.pi * self.shifts @ k)
        off = np.concatenate([[0], np.cumsum(self.orbitals)])
        no = self.H.shape[1]
        oi, oj = self.orbitals[self.pairs[:, 0]], self.orbitals[self.pairs[:, 1]]
        a, b = np.meshgrid(np.arange(no), np.arange(no), indexing="ij")
        valid = (a[None] < oi[:, None, None]) & (b[None] < oj[:, None, None])
        rows = (off[self.pairs[:, 0]][:, None, None] + a[None])[valid]
        cols = (off[self.pairs[:, 1]][:, None, None] + b[None])[valid]
        N = self.n_orbitals
        out = []
        for blocks in (self.H, self.S):
            if blocks is None:
                out.append(sp.identity(N, format="csr"))
                continue
            vals = (ph[:, None, None] * blocks)[valid]
            out.append(sp.csr_matrix((vals, (rows, cols)), shape=(N, N)))  # duplicates are summed
        return out[0], out[1]

    # ------------------------------------------------------------------ conversions
    def to_npz(self, path) -> None:
        """Write to a compressed ``.npz`` (read back with :meth:`from_npz`)."""
        np.savez_compressed(path, numbers=np.asarray(self.crystal.numbers), frac=np.asarray(self.crystal.frac),
                            lattice=np.asarray(self.crystal.lattice), pairs=self.pairs, shifts=self.shifts,
                            H=self.H, S=self.S if self.S is not None else np.zeros((0,)),
                            basis=json.dumps(self.basis.to_dict()), meta=json.dumps(self.meta, default=str))

    @classmethod
    def from_npz(cls, path) -> "TBOperator":
        """Read a file written by :meth:`to_npz` or by ``experiments/deeph/generate.py``."""
        try:
            z = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise FileFormatError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
        with z:
            keys = set(z.files)
            if "frac" in keys:
                frac = z["frac"]
            elif "cart" in keys:
                frac = z["cart"] @ np.linalg.inv(z["lattice"])
            else:
                raise FileFormatError(f"{path}: no 'frac' or 'cart' array")
            for need in ("numbers", "lattice", "pairs", "shifts", "H"):
                if need not in keys:
                    raise FileFormatError(f"{path}: missing array {need!r}")
            if "basis" in keys:
                basis = OrbitalBasis(json.loads(str(z["basis"])))
            else:  # generate.py: a single element with shells orbitals_l
                elements = sorted(set(int(x) for x in z["numbers"]))
                basis = OrbitalBasis({e: tuple(int(x) for x in z["orbitals_l"]) for e in elements})
            meta = {}
            for k in ("meta", "settings"):
                if k in keys:
                    meta.update(json.loads(str(z[k])))
            for k in keys - {"numbers", "frac", "cart", "lattice", "pairs", "shifts", "H", "S", "basis", "meta",
                             "settings", "orbitals_l"}:
                meta[k] = z[k]
            S = z["S"] if "S" in keys and z["S"].size else None
            crystal = Crystal(numbers=np.asarray(z["numbers"], np.int64), frac=np.asarray(frac, float),
                              lattice=np.asarray(z["lattice"], float), mask=np.ones(len(z["numbers"]), bool))
            return cls(crystal=crystal, basis=basis, pairs=z["pairs"], shifts=z["shifts"], H=z["H"], S=S, meta=meta)

    @classmethod
    def from_hamiltonian_data(cls, hd, p_order: str = "yzx") -> "TBOperator":
        """From a :class:`difcrys.data.hamiltonian.HamiltonianData` (DeePTB HDF5 reader).

        The DeePTB files order p orbitals ``(p_y, p_z, p_x)`` (``p_order="yzx"``); they are
        permuted into the e3nn-jax order ``(p_x, p_y, p_z)``.
        """
        basis = OrbitalBasis(hd.basis)
        numbers = np.asarray(hd.crystal.numbers)
        no = basis.max_orbitals()
        if hd.H.shape[1] != no:
            raise BlockShapeError(f"blocks are {hd.H.shape[1:]} but basis {hd.basis} has {no} orbitals")
        perms = {int(z): source_permutation(basis.for_element(z), p_order) for z in set(numbers.tolist())}
        H = np.zeros_like(hd.H)
        S = np.zeros_like(hd.S)
        for p, (i, j) in enumerate(hd.pairs):
            pi, pj = perms[int(numbers[i])], perms[int(numbers[j])]
            H[p, :len(pi), :len(pj)] = hd.H[p][np.ix_(pi, pj)]
            S[p, :len(pi), :len(pj)] = hd.S[p][np.ix_(pi, pj)]
        crystal = Crystal(numbers=numbers.astype(np.int64), frac=np.asarray(hd.crystal.frac, float),
                          lattice=np.asarray(hd.crystal.lattice, float), mask=np.ones(len(numbers), bool))
        return cls(crystal=crystal, basis=basis, pairs=hd.pairs, shifts=hd.shifts, H=H, S=S,
                   meta={**{k: v for k, v in hd.meta.items() if k != "orbital_order"}, "source_p_order": p_order})


def from_blocks(crystal: Crystal, basis: OrbitalBasis, H: dict, S: dict | None = None,
                meta: dict | None = None) -> TBOperator:
    """Build a :class:`TBOperator` from ``{(i, j, (R1, R2, R3)): block}`` dictionaries.

    Raises:
        BlockShapeError: a block's shape differs from ``(n_orb(i), n_orb(j))`` (names the block),
            or S has blocks H lacks.
        BasisError: an element of the crystal has no basis.
    """
    orbitals = basis.orbitals_per_atom(crystal.numbers)
    no = int(orbitals.max())
    keys = sorted(set(H) | set(S or {}), key=lambda t: (t[0], t[1], tuple(t[2])))
    P = len(keys)
    Hb, Sb = np.zeros((P, no, no)), (np.zeros((P, no, no)) if S is not None else None)
    pairs, shifts = np.zeros((P, 2), np.int64), np.zeros((P, 3), np.int64)
    n = len(orbitals)
    for p, key in enumerate(keys):
        i, j, R = key
        if not (0 <= i < n and 0 <= j < n):
            raise BlockShapeError(f"block {key}: atom index outside 0..{n - 1}")
        pairs[p], shifts[p] = (i, j), R
        for src, dst, name in ((H, Hb, "H"), (S, Sb, "S")):
            if src is None or key not in src:
                continue
            b = np.asarray(src[key], float)
            if b.shape != (orbitals[i], orbitals[j]):
                raise BlockShapeError(f"{name} block {key} has shape {b.shape}, expected "
                                      f"({orbitals[i]}, {orbitals[j]}) from the basis {basis.to_dict()}")
            dst[p, :orbitals[i], :orbitals[j]] = b
    return TBOperator(crystal=crystal, basis=basis, pairs=pairs, shifts=shifts, H=Hb, S=Sb, meta=meta or {})


@functools.partial(jax.jit, static_argnums=(4,))
def bloch_sum(blocks, pairs, shifts, kpts, n_atoms: int, orbital_index):
    """Bloch sums ``M(k) = Σ_R M(R) e^{2πi k·R}`` as dense matrices (jittable, differentiable).

    Args:
        blocks: ``[P, no, no]`` real-space blocks.
        pairs: ``[P, 2]`` atom indices; shifts: ``[P, 3]`` lattice translations.
        kpts: ``[K, 3]`` fractional k-points.
        n_atoms: static number of atoms.
        orbital_index: ``[N]`` static positions of the real orbitals in the padded layout.

    Returns:
        ``[K, N, N]`` complex.
    """
    no = blocks.shape[-1]
    phase = jnp.exp(2j * jnp.pi * (kpts @ shifts.T.astype(kpts.dtype)))  # [K, P]

    def one(ph):
        m4 = jnp.zeros((n_atoms, n_atoms, no, no), dtype=ph.dtype)
        m4 = m4.at[pairs[:, 0], pairs[:, 1]].add(ph[:, None, None] * blocks)
        m = m4.transpose(0, 2, 1, 3).reshape(n_atoms * no, n_atoms * no)
        return m[orbital_index][:, orbital_index]

    return jax.vmap(one)(phase)
