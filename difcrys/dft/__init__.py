"""Plane-wave Kohn-Sham DFT in JAX (Hartree atomic units inside this package)."""
