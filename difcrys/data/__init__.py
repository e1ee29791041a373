"""Data set readers and static-shape batch loaders (host-side).

Readers return a :class:`Dataset` (Crystals with NumPy leaves + labels in eV,
eV/Å, GPa, ``σ = (1/V) ∂E/∂ε``):

* :func:`read_cif_csv`, :func:`read_jarvis_supercon` — CDVAE CSVs (perov_5, carbon_24, mp_20, supercon);
* :func:`read_extxyz` — extended XYZ (mlearn_zuo2020, botnet_*);
* :func:`read_deepmd` — DeePMD npy systems (deepmd_water);
* :func:`read_mlearn_json` — mlearn JSON with ``virial_stress`` (kbar, VASP sign, element-dependent order);
* :func:`read_hamiltonian_h5` — DeePTB H(R)/S(R) blocks (→ :class:`HamiltonianData`);
* :func:`read_xrd_npz`, :func:`read_xrd_dat` — binned and measured powder patterns.

:class:`BucketLoader` pads batches to a few atom-count buckets so that ``jit``
compiles once per bucket. :func:`shared_data_dir` and :func:`load_shared` find
the shared data folder and load its sets by name.
"""

from difcrys.data._common import DatasetError
from difcrys.data.cif_csv import cif_to_crystal, parse_p1_cif, read_cif_csv, read_jarvis_supercon
from difcrys.data.dataset import Dataset, Sample
from difcrys.data.deepmd import read_deepmd
from difcrys.data.extxyz import molecule_box, read_extxyz
from difcrys.data.hamiltonian import HamiltonianData, read_hamiltonian_h5
from difcrys.data.loader import Batch, BucketLoader, choose_buckets
from difcrys.data.mlearn import SHEAR_ORDER, read_mlearn_json, virial_stress_to_gpa
from difcrys.data.shared import load_shared, shared_data_dir
from difcrys.data.xrd import read_xrd_dat, read_xrd_npz

__all__ = [
    "Batch",
    "BucketLoader",
    "Dataset",
    "DatasetError",
    "HamiltonianData",
    "SHEAR_ORDER",
    "Sample",
    "choose_buckets",
    "cif_to_crystal",
    "load_shared",
    "molecule_box",
    "parse_p1_cif",
    "read_cif_csv",
    "read_deepmd",
    "read_extxyz",
    "read_hamiltonian_h5",
    "read_jarvis_supercon",
    "read_mlearn_json",
    "read_xrd_dat",
    "read_xrd_npz",
    "shared_data_dir",
    "virial_stress_to_gpa",
]
