"""Localized-basis (tight-binding-form) operators: H(R), S(R) blocks per atom pair and lattice
translation, Bloch sums, generalized eigenproblems, bands, DOS and sparse solvers for large systems.

* :mod:`difcrys.tb.orbitals` — orbital layouts and the real spherical harmonic convention (e3nn-jax).
* :mod:`difcrys.tb.operators` — :class:`TBOperator`, Bloch sums, conversions (npz, DeePTB HDF5).
* :mod:`difcrys.tb.solve` — generalized eigenproblem with an overlap guard, bands, DOS, shift-invert.
"""

from difcrys.tb.operators import BlockShapeError, OverlapError, TBOperator, bloch_sum, from_blocks
from difcrys.tb.orbitals import BasisError, OrbitalBasis, source_permutation, wigner_d_atom
from difcrys.tb.solve import band_structure, dos, eigenvalues, eigs_near, fermi_level, generalized_eigh

__all__ = ["BasisError", "BlockShapeError", "OrbitalBasis", "OverlapError", "TBOperator", "band_structure",
           "bloch_sum", "dos", "eigenvalues", "eigs_near", "fermi_level", "from_blocks", "generalized_eigh",
           "source_permutation", "wigner_d_atom"]
