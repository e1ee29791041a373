"""Twisted bilayer graphene (≥ 10,000 atoms) with a trained Hamiltonian network.

Predicts H(R), S(R) of the commensurate moiré cell (:func:`structures.twisted_bilayer`), then the
eigenvalues at Γ nearest the Dirac energy with the sparse shift-invert solver
(:func:`difcrys.tb.eigs_near`). The Dirac energy is taken from the same model's prediction for
pristine monolayer graphene (midpoint of the two bands at K). Time and peak resident memory
(``ru_maxrss``) of each step are recorded.

Usage::

    python experiments/deeph/tbg.py RUN_DIR [--m 29] [--n-eigs 20] [--tile 40] [--json experiments/deeph/tbg.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--m", type=int, default=29)
    ap.add_argument("--spacing", type=float, default=3.35)
    ap.add_argument("--n-eigs", type=int, default=20)
    ap.add_argument("--json", default=None)
    ap.add_argument("--tile", type=float, default=0.0,
                    help="predict tile by tile (tiles of about this many Å, bounded memory); 0: one program")
    args = ap.parse_args(argv)

    from structures import graphene_supercell, twist_angle_deg, twisted_bilayer

    from difcrys.tb import eigenvalues, eigs_near
    from difcrys.train.hamiltonian import load_run

    out = {"m": args.m, "twist_deg": twist_angle_deg(args.m), "spacing_ang": args.spacing}
    model, params = load_run(args.run_dir)
    # Dirac energy from the model's pristine monolayer
    prim = graphene_supercell(1)
    e_k = eigenvalues(model.predict_operator(params, prim), [[1 / 3, 2 / 3, 0]])[0]
    out["dirac_energy_ev"] = float(0.5 * (e_k[3] + e_k[4]))
    out["pristine_K_splitting_mev"] = float(1000 * (e_k[4] - e_k[3]))
    t0 = time.time()
    c = twisted_bilayer(args.m, args.spacing)
    out["n_atoms"] = int(len(c.numbers))
    out["build_s"] = time.time() - t0
    t0 = time.time()
    g = model.graph(c)
    out["graph_s"] = time.time() - t0
    out["n_edges"] = int(np.asarray(g.mask).sum())
    t0 = time.time()
    if args.tile > 0:
        op = model.predict_operator_tiled(params, c, tile=args.tile, progress=True)
        out["tile_ang"] = args.tile
        out["n_tiles"] = int(op.meta["n_tiles"])
        out["cluster_atoms"] = int(op.meta["cluster_atoms"])
    else:
        op = model.predict_operator(params, c, g)
    out["predict_s"] = time.time() - t0
    out["rss_after_predict_mib"] = rss_mib()
    out["n_orbitals"] = op.n_orbitals
    print(json.dumps(out), flush=True)
    t0 = time.time()
    vals = eigs_near(op, out["dirac_energy_ev"], n=args.n_eigs)
    out["eigsh_s"] = time.time() - t0
    out["rss_peak_mib"] = rss_mib()
    out["eigenvalues_near_dirac_ev"] = vals.tolist()
    out["eigenvalues_minus_dirac_mev"] = (1000 * (vals - out["dirac_energy_ev"])).tolist()
    print(json.dumps(out, indent=2), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
