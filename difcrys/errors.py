"""The exceptions difcrys raises. Every user-facing failure is one of these."""

from __future__ import annotations


class DifcrysError(Exception):
    """Base class of all difcrys errors."""


class StructureError(DifcrysError, ValueError):
    """A crystal structure is invalid (singular lattice, overlapping atoms, NaN, ...)."""


class ElementError(StructureError):
    """An element symbol or atomic number is unknown or unsupported."""


class FileFormatError(DifcrysError, ValueError):
    """A file is missing, malformed, truncated or of an unknown format."""


class ConvergenceError(DifcrysError, RuntimeError):
    """An iterative algorithm (SCF, eigensolver, relaxation) did not converge."""


class CapacityError(DifcrysError, RuntimeError):
    """A fixed-capacity buffer (neighbour list, padding) overflowed."""


class ConfigError(DifcrysError, ValueError):
    """A configuration or command-line setting is invalid."""


class PseudopotentialError(DifcrysError, ValueError):
    """A pseudopotential is missing or malformed for an element."""
