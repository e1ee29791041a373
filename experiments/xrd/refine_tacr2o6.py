"""Rietveld-like refinement of the measured TaCr2O6 pattern (MatterGen release data).

Two phases, as in the FullProf input shipped with the data: rutile-type
TaCr2O6 (P4_2/mnm, Ta/Cr disordered 1:2 on 2a, O on (x, x, 1/2)) and a Cr2O3
impurity (R-3c; only its scale refines, as its few weak lines cannot fix a
lattice). The TaCr2O6 starting structure is the FullProf one perturbed by 2 % in
the lattice and 0.02 in the free O coordinate; Cr2O3 starts from its
FullProf lattice. Cu Kα1/Kα2 (ratio 0.5), monochromator Cthm = 0.91, pseudo-Voigt.

Usage: python experiments/xrd/refine_tacr2o6.py [--plot experiments/xrd/tacr2o6_fit.png]
"""

from __future__ import annotations

import argparse
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from pymatgen.core import Lattice, Structure  # noqa: E402

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import DATA, HERE, update_results  # noqa: E402

from difcrys.xrd.api import crystal_from_pymatgen  # noqa: E402
from difcrys.xrd.pattern import Profile  # noqa: E402
from difcrys.xrd.patterns_io import read_pattern  # noqa: E402
from difcrys.xrd.refine import Phase, perturb, refine  # noqa: E402

FULLPROF = {"a": 4.648826, "c": 3.028236, "O.x": 0.19655, "Cr2O3.a": 4.956595, "Cr2O3.c": 13.611871}


def phases(seed: int = 0):
    tcr = Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(FULLPROF["a"], FULLPROF["c"]),
        ["O", {"Cr": 2 / 3, "Ta": 1 / 3}], [[FULLPROF["O.x"], FULLPROF["O.x"], 0.5], [0, 0, 0]])
    cr2o3 = Structure.from_spacegroup(
        "R-3c", Lattice.hexagonal(FULLPROF["Cr2O3.a"], FULLPROF["Cr2O3.c"]), ["Cr", "O"],
        [[0, 0, 0.15185], [0.0, 0.30380, 0.25]])
    c1, o1 = crystal_from_pymatgen(tcr)
    c2, o2 = crystal_from_pymatgen(cr2o3)
    start = perturb(c1, seed, lattice=0.02, frac=0.02, occupancy=o1)
    prof = Profile(U=0.05, V=-0.02, W=0.02, eta0=0.3, eta1=0.0)
    return [Phase(start, o1, name="TaCr2O6", profile=prof, B=0.5),
            Phase(c2, o2, name="Cr2O3", refine=("scale",), profile=prof, B=0.5)], c1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plot", default=str(HERE / "tacr2o6_fit.png"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    pat = read_pattern(DATA / "xrd_measured" / "mattergen_TaCr2O6" / "xrd_measurement_TaCr2O6.dat")
    ph, truth = phases(args.seed)
    a0 = np.asarray(ph[0].crystal.lattice_parameters())
    t0 = time.time()
    res = refine(pat, ph, radiation_name="CuKa", doublet=True, cthm=0.91, n_background=12,
                 table="waasmaier_kirfel", log=lambda m: print(m, flush=True))
    dt = time.time() - t0
    print(res.summary())
    P = res.parameters
    out = {
        "rwp_percent": round(100 * res.rwp, 3), "rp_percent": round(100 * res.rp, 3),
        "rexp_percent": round(100 * res.rexp, 3), "chi2": round(res.chi2, 3),
        "start": {"a": float(a0[0]), "c": float(a0[2]),
                  "O.x": float(np.asarray(ph[0].crystal.frac)[0, 0])},
        "refined": {"a": P["TaCr2O6.a"], "c": P["TaCr2O6.c"], "O.x": P["TaCr2O6.O0.x"],
                    "Cr2O3.scale": P["Cr2O3.scale"], "zero": P["zero"],
                    "B(O)": P["TaCr2O6.B(O0)"], "B(Cr,Ta)": P["TaCr2O6.B(CrTa1)"]},
        "fullprof_input": FULLPROF, "seconds": round(dt, 1), "n_lm_iterations": res.n_iter,
        "spacegroups": res.spacegroups,
    }
    update_results("refine_tacr2o6", out)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 5))
        ax.plot(res.two_theta, res.observed, ".", ms=2, label="measured")
        ax.plot(res.two_theta, res.calculated, "-", lw=0.8, label=f"difcrys fit (Rwp {100 * res.rwp:.2f} %)")
        ax.plot(res.two_theta, res.observed - res.calculated - 0.1 * res.observed.max(), "-", lw=0.5,
                label="difference")
        ax.set_xlabel("2θ (deg)")
        ax.set_ylabel("counts")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    return out


if __name__ == "__main__":
    main()
