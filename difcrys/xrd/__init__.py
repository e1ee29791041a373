"""Differentiable powder X-ray diffraction, Rietveld-like refinement and pattern identification.

Modules:
    scattering: atomic X-ray scattering factors (Doyle–Turner/Mott–Bethe, Waasmaier–Kirfel).
    radiation: characteristic wavelengths, Kα doublets, input checks.
    reflections: host-side hkl enumeration with static capacities, stick-peak grouping.
    pattern: pure JAX structure factors, stick and profile patterns.
    api: one-call host wrappers (:func:`xrd_peaks`, :func:`simulate_profile`), JSON.
    patterns_io: reading measured patterns (.xy / .dat).
    refine: Rietveld-like least-squares refinement respecting the space group.
    identify: CrySTINet-style classifier of simulated patterns.
"""

from difcrys.xrd.api import PeakTable, crystal_from_pymatgen, load_structure, simulate_profile, xrd_peaks
from difcrys.xrd.pattern import (
    Profile,
    StickPattern,
    powder_pattern,
    reflection_intensities,
    stick_pattern,
    structure_factor_sq,
)
from difcrys.xrd.radiation import WAVELENGTHS, kalpha_doublet, wavelength
from difcrys.xrd.reflections import Reflections, batch_reflections, reflections
from difcrys.xrd.scattering import form_factor

__all__ = [
    "PeakTable", "Profile", "Reflections", "StickPattern", "WAVELENGTHS", "batch_reflections",
    "crystal_from_pymatgen", "form_factor", "kalpha_doublet", "load_structure", "powder_pattern",
    "reflection_intensities", "reflections", "simulate_profile", "stick_pattern", "structure_factor_sq",
    "wavelength", "xrd_peaks",
]
