"""Physics checks of a trained Si potential: FIRE cell relaxation (lattice constant vs the DFT cells
of the training data), NVE energy drift and NVT temperature on a 216-atom supercell.

Usage::

    python experiments/mlearn/si_checks.py runs/mlearn_Si --nve-steps 10000 --nvt-steps 5000

The DFT reference lattice constant is read from the data: the bulk 64-atom (2x2x2 conventional)
AIMD cells of ``Si_train`` have a = 10.9375 / 2 Å. Writes ``experiments/mlearn/si_checks.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def dft_lattice_constant() -> float:
    from difcrys.data import load_shared

    ds = load_shared("mlearn_zuo2020", "Si_train")
    a = []
    for c in ds.crystals:
        L = np.asarray(c.lattice)
        if c.n_atoms == 64 and np.allclose(L, np.diag(np.diag(L))) and np.ptp(np.diag(L)) < 1e-8:
            a.append(L[0, 0] / 2)
    return float(np.median(a))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--nve-steps", type=int, default=2000)
    ap.add_argument("--nvt-steps", type=int, default=2000)
    ap.add_argument("--temperature", type=float, default=300.0)
    args = ap.parse_args(argv)

    from difcrys import io
    from difcrys.crystal import Crystal, supercell
    from difcrys.md.dynamics import run_md
    from difcrys.md.relax import fire_relax
    from difcrys.train.potential import load_run

    pot, params = load_run(args.run_dir)
    out = {"run_dir": args.run_dir, "command": "python experiments/mlearn/si_checks.py " + " ".join(argv or sys.argv[1:])}
    a_dft = dft_lattice_constant()
    conv = supercell(io.example("Si"), np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]]))
    rng = np.random.default_rng(0)
    rattled = Crystal.create(conv.numbers, np.asarray(conv.frac) + 0.01 * rng.standard_normal((8, 3)), conv.lattice)
    res = fire_relax(pot, params, rattled, fmax=1e-3, max_steps=5000, relax_cell=True)
    L = np.asarray(res.crystal.lattice)
    a_model = float(np.cbrt(abs(np.linalg.det(L))) / 1.0)
    out["relax"] = {"converged": res.converged, "fmax_eV_per_A": res.fmax, "steps": res.n_steps,
                    "a_model_A": a_model, "a_dft_A": a_dft, "rel_error": a_model / a_dft - 1,
                    "lattice": L.tolist(), "stress_GPa": np.asarray(res.stress).tolist()}
    print(json.dumps(out["relax"], indent=1), flush=True)
    big = supercell(conv, 3 * np.eye(3, dtype=int))  # 216 atoms
    big = Crystal.create(big.numbers, big.frac, np.asarray(big.lattice) * a_model / 5.431)
    n = big.n_atoms
    if args.nve_steps:
        r = run_md(pot, params, big, ensemble="nve", temperature=args.temperature, steps=args.nve_steps, dt=1.0,
                   log_every=50, seed=1)
        out["nve"] = {"atoms": n, "steps": args.nve_steps, "dt_fs": 1.0,
                      "drift_meV_per_atom_per_ns": r.drift_meV_per_atom_per_ns(n),
                      "max_dev_meV_per_atom": float(1000 * np.max(np.abs(r.total_energy - r.total_energy[0])) / n),
                      "mean_T_K": float(r.temperature.mean())}
        print(json.dumps(out["nve"], indent=1), flush=True)
    if args.nvt_steps:
        r = run_md(pot, params, big, ensemble="nvt", temperature=args.temperature, steps=args.nvt_steps, dt=1.0,
                   log_every=20, seed=2)
        T = r.temperature[len(r.temperature) // 4:]
        out["nvt"] = {"atoms": n, "steps": args.nvt_steps, "target_K": args.temperature, "mean_T_K": float(T.mean()),
                      "std_T_K": float(T.std()),
                      "expected_std_K": float(args.temperature * np.sqrt(2 / (3 * n)))}
        print(json.dumps(out["nvt"], indent=1), flush=True)
    with open(os.path.join(HERE, "si_checks.json"), "w") as fh:
        json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
