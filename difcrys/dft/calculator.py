"""ASE ``Calculator`` for the plane-wave DFT: energy, forces and stress (eV, eV/Å, eV/Å³).

For relaxations the basis can be kept fixed between calls (``fixed_basis=True``):
the Miller-index set, FFT grid and k-points of the first structure are reused while
atoms move and the cell deforms, so each step reuses the compiled SCF and starts
from the previous density. Energies, forces and the fixed-basis stress are then
exactly consistent (no Pulay stress); re-run a single point at the end for the
energy in the basis of the final cell.
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from difcrys.units import ANG_BOHR, EV_PER_ANG3_GPA, HARTREE_EV


class DFTCalculator(Calculator):
    """difcrys plane-wave Kohn–Sham DFT as an ASE calculator.

    Args:
        ecut: kinetic cutoff [Ha].
        kpts: Monkhorst–Pack grid.
        smearing, width: occupation smearing and width [Ha].
        xc: functional name.
        fixed_basis: keep the first structure's basis (see module docstring).
        symmetry: use the space group (ignored with ``fixed_basis``, where the symmetry
            of the first structure may be broken by later steps).
        scf_kw: extra keyword arguments of :func:`difcrys.dft.scf.run_scf`.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, ecut=10.0, kpts=(4, 4, 4), smearing="none", width=0.0, xc="lda-teter",
                 fixed_basis=False, symmetry=True, progress=False, **scf_kw):
        super().__init__()
        self.ecut, self.kpts, self.smearing, self.width, self.xc = ecut, tuple(kpts), smearing, width, xc
        self.fixed_basis, self.symmetry, self.progress, self.scf_kw = fixed_basis, symmetry, progress, scf_kw
        self._setup = self._params = self._rho = None
        self.last_result = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        import jax.numpy as jnp

        from difcrys import io
        from difcrys.dft import derivatives
        from difcrys.dft.scf import prepare, run_scf

        super().calculate(atoms, properties, system_changes)
        crystal = io.from_ase(self.atoms)
        kw = dict(tol=1e-9, progress=self.progress, **self.scf_kw)
        if self.fixed_basis:
            if self._setup is None:
                self._setup, self._params = prepare(crystal, self.ecut, self.kpts, smearing=self.smearing,
                                                    width=self.width, xc=self.xc, symmetry=False)
            params = dict(self._params, frac=jnp.asarray(np.asarray(crystal.frac)),
                          lattice=jnp.asarray(np.asarray(crystal.lattice) * ANG_BOHR))
            res = run_scf(setup=self._setup, params=params, rho0=self._rho, **kw)
        else:
            res = run_scf(crystal, self.ecut, self.kpts, smearing=self.smearing, width=self.width, xc=self.xc,
                          symmetry=self.symmetry, **kw)
        self._rho = res.rho
        self.last_result = res
        e = res.energy * HARTREE_EV
        self.results["energy"] = e
        self.results["free_energy"] = e
        if "forces" in properties or "stress" in properties:
            self.results["forces"] = np.asarray(derivatives.forces(res))
            s = np.asarray(derivatives.stress(res)) / EV_PER_ANG3_GPA  # eV/Å³, ASE sign convention
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def relax(crystal, ecut=10.0, kpts=(4, 4, 4), cell: bool = True, fmax: float = 1e-3, smax_gpa: float = 0.01,
          steps: int = 100, smearing="none", width=0.0, xc="lda-teter", log=None):
    """Relax positions (and the cell) with DFT forces and stress (ASE BFGS on a Fréchet cell filter).

    Args:
        crystal: starting structure (Å).
        fmax: force tolerance [eV/Å].
        smax_gpa: stress tolerance [GPa] when relaxing the cell.
    Returns:
        ``(relaxed Crystal, info dict)`` with final energy [eV], max force [eV/Å], stress [GPa], steps.
    """
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    from difcrys import io
    from difcrys.errors import ConvergenceError

    atoms = io.to_ase(crystal)
    atoms.calc = DFTCalculator(ecut, kpts, smearing, width, xc, fixed_basis=True)
    target = FrechetCellFilter(atoms, scalar_pressure=0.0) if cell else atoms
    opt = BFGS(target, logfile=log)
    # ASE's fmax for the filter mixes forces and virials (eV/Å units): tolerance from both criteria
    f_tol = min(fmax, smax_gpa / EV_PER_ANG3_GPA * atoms.get_volume() ** (1 / 3)) if cell else fmax
    converged = opt.run(fmax=f_tol, steps=steps)
    forces = atoms.get_forces()
    stress = atoms.get_stress(voigt=False) * EV_PER_ANG3_GPA
    info = {"energy_ev": float(atoms.get_potential_energy()), "max_force_ev_per_ang": float(np.abs(forces).max()),
            "stress_gpa": stress.tolist(), "steps": int(opt.nsteps), "converged": bool(converged)}
    if not converged:
        raise ConvergenceError(f"relaxation not converged in {steps} steps (max force "
                               f"{info['max_force_ev_per_ang']:.2e} eV/Å)")
    return io.from_ase(atoms), info
