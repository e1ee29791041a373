"""Differentiable powder X-ray diffraction, Rietveld-like refinement and pattern identification.

Modules:
    scattering: atomic X-ray scattering factors (Doyle–Turner/Mott–Bethe, Waasmaier–Kirfel).
    radiation: characteristic wavelengths, Kα doublets, input checks.
    reflections: host-side hkl enumeration with static capacities, stick-peak grouping.
    pattern: pure JAX structure factors, stick and profile patterns.
    api: one-call host wrappers (:func:`xrd_peaks`, :func:`simulate_profile`), JSON.
    patterns_io: reading measured patterns (.xy / .dat).
    symmetry_params: spglib-based symmetry-free lattice/coordinate/B parameters.
    refine: Rietveld-like least-squares refinement respecting the space group.
    identify: CrySTINet-style classifier of simulated patterns.
"""

from difcrys.xrd.api import (
    PeakTable,
    crystal_from_pymatgen,
    load_structure,
    simulate_profile,
    xrd_peaks,
    xrd_peaks_batch,
)
from difcrys.xrd.pattern import (
    Profile,
    StickPattern,
    powder_pattern,
    reflection_intensities,
    stick_pattern,
    structure_factor_sq,
)
from difcrys.xrd.patterns_io import MeasuredPattern, read_pattern
from difcrys.xrd.radiation import WAVELENGTHS, kalpha_doublet, wavelength
from difcrys.xrd.reflections import Reflections, batch_reflections, reflections
from difcrys.xrd.refine import Phase, RefinementResult, perturb, refine
from difcrys.xrd.scattering import form_factor

__all__ = [
    "MeasuredPattern", "PeakTable", "Phase", "Profile", "RefinementResult", "Reflections", "StickPattern",
    "WAVELENGTHS", "batch_reflections", "crystal_from_pymatgen", "form_factor", "kalpha_doublet", "load_structure",
    "perturb", "powder_pattern", "read_pattern", "reflection_intensities", "reflections", "refine",
    "simulate_profile", "stick_pattern", "structure_factor_sq", "wavelength", "xrd_peaks", "xrd_peaks_batch",
]
