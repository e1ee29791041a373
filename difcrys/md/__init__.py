"""Molecular dynamics and relaxation driven by learned potentials (jax-md integrators).

Submodules are imported on demand::

    from difcrys.md.dynamics import ModelEnergy, run_md
    from difcrys.md.relax import fire_relax
    from difcrys.md.calculator import DifcrysCalculator
"""
