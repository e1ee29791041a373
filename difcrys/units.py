"""Physical constants and unit converters (CODATA 2018), in one place.

Public difcrys APIs use Å, eV, eV/Å, GPa, K and fs. Inside :mod:`difcrys.dft`
Hartree atomic units (Bohr, Ha) are used; convert only at module entry/exit
with the names below.

Reference: E. Tiesinga et al., "CODATA recommended values of the fundamental
physical constants: 2018", Rev. Mod. Phys. 93, 025010 (2021).
"""

from __future__ import annotations

# Lengths
BOHR_ANG = 0.529177210903  # 1 Bohr in Å
ANG_BOHR = 1.0 / BOHR_ANG  # 1 Å in Bohr

# Energies
HARTREE_EV = 27.211386245988  # 1 Ha in eV
EV_HARTREE = 1.0 / HARTREE_EV
RYDBERG_EV = HARTREE_EV / 2.0

# Boltzmann constant
KB_EV_PER_K = 8.617333262e-5  # eV/K
KB_HA_PER_K = KB_EV_PER_K / HARTREE_EV

# Pressure / stress
EV_PER_ANG3_GPA = 160.21766208  # 1 eV/Å^3 in GPa
GPA_EV_PER_ANG3 = 1.0 / EV_PER_ANG3_GPA
HA_PER_BOHR3_GPA = HARTREE_EV / BOHR_ANG**3 * EV_PER_ANG3_GPA  # ≈ 29421.02 GPa
KBAR_GPA = 0.1

# Forces
HA_PER_BOHR_EV_PER_ANG = HARTREE_EV / BOHR_ANG  # 1 Ha/Bohr in eV/Å

# Mass and density
AMU_G = 1.66053906660e-24  # 1 u in grams
ANG3_CM3 = 1e-24  # 1 Å^3 in cm^3

# Time (ASE-style internal unit: Å sqrt(u/eV))
FS = 1.0 / 10.180505671156723  # 1 fs in Å·sqrt(u/eV)


def ang_to_bohr(x):
    """Convert a length from Å to Bohr."""
    return x * ANG_BOHR


def bohr_to_ang(x):
    """Convert a length from Bohr to Å."""
    return x * BOHR_ANG


def ev_to_ha(x):
    """Convert an energy from eV to Hartree."""
    return x * EV_HARTREE


def ha_to_ev(x):
    """Convert an energy from Hartree to eV."""
    return x * HARTREE_EV


def kbar_to_gpa(x):
    """Convert a pressure from kbar to GPa."""
    return x * KBAR_GPA
