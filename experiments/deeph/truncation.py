"""Band error caused by the nearsightedness cutoff alone: the DFT H, S with blocks of bond length
≥ r_c dropped, against the full DFT operator (Si64 ABACUS) or the DFT eigenvalues (PySCF data).

Usage::

    python experiments/deeph/truncation.py si64 --cutoffs 5 6 7
    python experiments/deeph/truncation.py experiments/deeph/data/graphene_000.npz --cutoffs 4.5 5 6 7.1
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("source", help="'si64' (shared DeePTB data) or a generated .npz")
    ap.add_argument("--cutoffs", type=float, nargs="+", default=[5.0, 6.0, 7.0])
    ap.add_argument("--window", type=float, default=2.0, help="|E - E_F| window [eV]")
    args = ap.parse_args(argv)
    from difcrys.tb import TBOperator
    from difcrys.train.hamiltonian import band_errors, truncate

    if args.source == "si64":
        from difcrys.data.hamiltonian import read_hamiltonian_h5
        from difcrys.data.shared import shared_data_dir

        hd = read_hamiltonian_h5(shared_data_dir() / "deeptb_si64_hamiltonian")
        op = TBOperator.from_hamiltonian_data(hd)
        op.meta["n_electrons"] = 256  # 64 Si x 4 valence electrons
        op.meta["kpoints"] = hd.kpoints[::6]
    else:
        op = TBOperator.from_npz(args.source)
    d = np.linalg.norm(op.bond_vectors(), axis=1)
    out = {}
    for rc in args.cutoffs:
        r = band_errors(truncate(op, rc), op, args.window)
        r["n_blocks"] = int((d < rc).sum())
        out[str(rc)] = r
        print(rc, json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
