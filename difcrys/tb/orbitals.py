"""Orbital layouts of a localized basis and their real-spherical-harmonic convention.

Every atom carries a list of shells, each with an angular momentum ``l`` and ``2l + 1``
orbitals ordered ``m = −l … l`` in the **e3nn-jax real spherical harmonic basis**
(e3nn-jax 0.21, ``e3nn.spherical_harmonics``): for ``l = 1`` the order is
``(p_x, p_y, p_z)`` and the Wigner-D matrix is the rotation matrix itself,
``D¹(R) = R`` (checked in ``tests/test_tb.py``). With this convention a block
``H_{ij}`` between shells ``l1`` of atom i and ``l2`` of atom j transforms under a rotation
``R`` of the structure as ``H'_{ij} = D^{l1}(R) H_{ij} D^{l2}(R)^T``, and it decomposes into
irreps ``L = |l1 − l2| … l1 + l2`` (parity ``(−1)^{l1+l2}``) with the e3nn Clebsch–Gordan
coefficients (used by :mod:`difcrys.nn.hamiltonian`).

Source codes order p orbitals differently; :func:`source_permutation` gives the index map
into the internal order:

* PySCF spherical GTOs: ``p_x, p_y, p_z`` (``"xyz"``, identity);
* DeePTB HDF5 files (ABACUS Si64 in ``../shared/data``): ``p_y, p_z, p_x`` (``"yzx"``,
  m = −1, 0, +1 of the e3nn-torch convention; determined from the data in
  :mod:`difcrys.data.hamiltonian`);
* ``"zxy"`` (ABACUS native order m = 0, +1, −1) is accepted too.

Only ``s`` and ``p`` shells have a source-order table; ``d`` and higher shells are
accepted only in the internal (e3nn-jax) order.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from difcrys.crystal import atomic_number, chemical_symbol
from difcrys.errors import ConfigError, ElementError

_LETTER = {"s": 0, "p": 1, "d": 2, "f": 3, "g": 4}
_P_ORDERS = {"xyz": (0, 1, 2), "yzx": (1, 2, 0), "zxy": (2, 0, 1)}


class BasisError(ElementError):
    """An element has no orbital basis, or a basis specification is malformed."""


def parse_shells(spec) -> tuple[int, ...]:
    """Shell angular momenta of a basis given as a DeePTB string or a sequence of ``l``.

    ``"1s1p"`` → ``(0, 1)``; ``"2s2p1d"`` → ``(0, 0, 1, 1, 2)``; ``[0, 1]`` → ``(0, 1)``.
    """
    if isinstance(spec, str):
        toks = re.findall(r"(\d*)([a-z])", spec.strip().lower())
        if not toks or "".join(n + c for n, c in toks) != spec.strip().lower():
            raise BasisError(f"malformed basis string {spec!r} (expected e.g. '1s1p', '2s2p1d')")
        out = []
        for n, c in toks:
            if c not in _LETTER:
                raise BasisError(f"unknown shell letter {c!r} in basis {spec!r}")
            out += [_LETTER[c]] * int(n or 1)
        return tuple(out)
    ls = tuple(int(x) for x in spec)
    if not ls or min(ls) < 0:
        raise BasisError(f"invalid shell list {spec!r}")
    return ls


@dataclasses.dataclass(frozen=True)
class OrbitalBasis:
    """Element → shells. ``OrbitalBasis({"C": "1s1p"})`` or ``OrbitalBasis({6: (0, 1)})``.

    Attributes:
        shells: ``{Z: (l, ...)}`` per atomic number.
    """

    shells: dict

    def __init__(self, shells: dict):
        norm = {}
        for k, v in dict(shells).items():
            try:
                z = atomic_number(k)
            except Exception as e:  # noqa: BLE001
                raise BasisError(f"unknown element {k!r} in orbital basis: {e}") from None
            norm[z] = parse_shells(v)
        object.__setattr__(self, "shells", norm)

    def for_element(self, z: int) -> tuple[int, ...]:
        """Shells of element ``z``; :class:`BasisError` naming the element if absent."""
        z = int(z)
        if z not in self.shells:
            have = ", ".join(chemical_symbol(k) for k in sorted(self.shells))
            raise BasisError(f"no orbital basis for element {chemical_symbol(z)} (Z={z}); the basis "
                             f"covers {have}")
        return self.shells[z]

    def n_orbitals(self, z: int) -> int:
        return int(sum(2 * l + 1 for l in self.for_element(z)))

    def orbitals_per_atom(self, numbers) -> np.ndarray:
        """``[n]`` number of orbitals of each atom (raises for an element without a basis)."""
        return np.array([self.n_orbitals(z) for z in np.asarray(numbers)], np.int64)

    def max_orbitals(self) -> int:
        return max(self.n_orbitals(z) for z in self.shells)

    def to_dict(self) -> dict:
        return {chemical_symbol(z): list(v) for z, v in self.shells.items()}


def source_permutation(shells, p_order: str = "xyz") -> np.ndarray:
    """Index array ``perm`` with ``internal = source[perm]`` for one atom's orbitals.

    Args:
        shells: the atom's shell angular momenta.
        p_order: the source's p-orbital order, one of ``"xyz"``, ``"yzx"``, ``"zxy"``.
    """
    if p_order not in _P_ORDERS:
        raise ConfigError(f"unknown p-orbital order {p_order!r}; choose one of {sorted(_P_ORDERS)}")
    src_pos = {ax: k for k, ax in enumerate(p_order)}  # axis letter -> position in source
    perm, off = [], 0
    for l in shells:
        if l == 1:
            perm += [off + src_pos[ax] for ax in "xyz"]
        elif l == 0 or p_order == "xyz":
            perm += list(range(off, off + 2 * l + 1))
        else:
            raise BasisError(f"no conversion table for l={l} shells from p-order {p_order!r}; only s and p "
                             "shells can be converted (d and higher must already be in e3nn-jax order)")
        off += 2 * l + 1
    return np.array(perm, np.int64)


def wigner_d_atom(shells, rotation) -> np.ndarray:
    """Block-diagonal Wigner-D ``[no, no]`` of one atom's orbitals for a proper rotation ``R``.

    ``D^l`` from e3nn-jax (``Irrep.D_from_matrix``); orbitals transform as
    ``φ'_m = Σ_m' D^l_{mm'} φ_m'`` under the rotation ``r → R r`` of the structure.
    """
    import e3nn_jax as e3nn

    R = np.asarray(rotation, float)
    blocks = [np.asarray(e3nn.Irrep(l, (-1) ** l).D_from_matrix(R)) for l in shells]
    no = sum(b.shape[0] for b in blocks)
    D = np.zeros((no, no))
    o = 0
    for b in blocks:
        n = b.shape[0]
        D[o:o + n, o:o + n] = b
        o += n
    return D
