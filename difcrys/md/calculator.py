"""An ASE ``Calculator`` for a trained difcrys potential (energy, free_energy, forces, stress).

Example::

    from difcrys.md.calculator import DifcrysCalculator
    atoms.calc = DifcrysCalculator.from_run("runs/mlearn_Si")
    atoms.get_potential_energy(); atoms.get_forces(); atoms.get_stress()

Stress is returned in ASE's units (eV/Å³, Voigt order xx yy zz yz xz xy, ``σ = (1/V) ∂E/∂ε``).
Non-periodic ``Atoms`` get a cubic box with 20 Å of vacuum beyond the cutoff's reach.
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from difcrys.crystal import Crystal
from difcrys.units import EV_PER_ANG3_GPA

__all__ = ["DifcrysCalculator"]


class DifcrysCalculator(Calculator):
    """ASE calculator wrapping :class:`~difcrys.nn.potential.Potential` and its parameters."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, potential, params, **kw):
        super().__init__(**kw)
        self.potential = potential
        self.params = params

    @classmethod
    def from_run(cls, run_dir: str, which: str = "best", **kw) -> "DifcrysCalculator":
        from difcrys.train.potential import load_run

        pot, params = load_run(run_dir, which)
        return cls(pot, params, **kw)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms
        pos = a.get_positions()
        if a.pbc.all():
            lattice = np.asarray(a.cell[:])
        else:
            extent = np.ptp(pos, axis=0).max() if len(pos) else 0.0
            lattice = np.eye(3) * (extent + self.potential.config.cutoff + 20.0)
        c = Crystal.from_cartesian(a.get_atomic_numbers(), pos, lattice)
        out = self.potential.compute(self.params, c, stress=bool(a.pbc.all()))
        e = float(out["energy"])
        self.results["energy"] = e
        self.results["free_energy"] = e
        self.results["forces"] = np.asarray(out["forces"], float)
        if "stress" in out:
            s = np.asarray(out["stress"], float) / EV_PER_ANG3_GPA
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
