"""Physics checks of a trained Si potential: FIRE cell relaxation (lattice constant vs the DFT cells
of the training data), NVE energy drift, NVT temperature and NPT volume on a 216-atom supercell.

Usage (each check can run in its own process; results are merged into ``si_checks.json``)::

    python experiments/mlearn/si_checks.py runs/mlearn_Si --checks relax
    python experiments/mlearn/si_checks.py runs/mlearn_Si --checks nve --nve-steps 10000 --dtype float64
    python experiments/mlearn/si_checks.py runs/mlearn_Si --checks nvt --nvt-steps 5000 --dtype float64
    python experiments/mlearn/si_checks.py runs/mlearn_Si --checks npt --npt-steps 3000 --dtype float64

The DFT reference lattice constant is read from the data: the bulk 64-atom (2x2x2 conventional)
AIMD cells of ``Si_train`` have a = 10.9375 / 2 Å. ``--dtype float64`` evaluates the (float32-trained)
weights in float64, which removes float32 round-off from the forces (it matters for the NVE drift).

Quantities:

* NVE drift: slope of a least-squares line through the total energy ``E_pot + E_kin`` logged every
  ``log_every`` steps, in meV/atom/ns; also the RMS fluctuation around that line.
* NVT: mean and standard deviation of the instantaneous kinetic temperature after discarding the
  first ``--nvt-equil`` fs; canonical expectation ``⟨T⟩ = T₀`` and
  ``std(T) = T₀ √(2 / N_dof)`` with ``N_dof = 3N − 3`` (total momentum is conserved; Frenkel & Smit,
  *Understanding Molecular Simulation*, 2nd ed., Eq. 4.1.13 / §6.1.1); the standard error of the
  mean uses block averages (blocks of 500 fs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "si_checks.json")


def dft_lattice_constant() -> float:
    from difcrys.data import load_shared

    ds = load_shared("mlearn_zuo2020", "Si_train")
    a = []
    for c in ds.crystals:
        L = np.asarray(c.lattice)
        if c.n_atoms == 64 and np.allclose(L, np.diag(np.diag(L))) and np.ptp(np.diag(L)) < 1e-8:
            a.append(L[0, 0] / 2)
    return float(np.median(a))


def block_sem(x, block: int) -> float:
    """Standard error of the mean of a correlated series from non-overlapping block averages."""
    nb = len(x) // block
    if nb < 2:
        return float("nan")
    b = np.asarray(x[: nb * block]).reshape(nb, block).mean(1)
    return float(b.std(ddof=1) / np.sqrt(nb))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--checks", nargs="+", default=["relax", "nve", "nvt"], choices=["relax", "nve", "nvt", "npt"])
    ap.add_argument("--nve-steps", type=int, default=10000)
    ap.add_argument("--nvt-steps", type=int, default=5000)
    ap.add_argument("--nvt-equil", type=float, default=1000.0, help="fs discarded before NVT statistics")
    ap.add_argument("--nvt-thermostat", default="nose_hoover", choices=["nose_hoover", "langevin"],
                    help="langevin: BAOAB, friction 0.01/fs, started at 2 T (equipartition halves it); the "
                    "result goes to the key nvt_langevin")
    ap.add_argument("--npt-steps", type=int, default=3000)
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--max-wall-s", type=float, default=None, help="stop an MD check after this wall time "
                    "(the partial result is recorded with completed = false)")
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from difcrys import io
    from difcrys.crystal import Crystal, supercell
    from difcrys.md.dynamics import run_md
    from difcrys.md.relax import fire_relax
    from difcrys.nn.potential import Potential
    from difcrys.train.potential import load_run

    pot, params = load_run(args.run_dir)
    if args.dtype != pot.config.dtype:
        pot = Potential(dataclasses.replace(pot.config, dtype=args.dtype))
        params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, args.dtype), params)
    out = json.load(open(OUT)) if os.path.isfile(OUT) else {}
    out["run_dir"] = args.run_dir
    cmd = "python experiments/mlearn/si_checks.py " + " ".join(sys.argv[1:] if argv is None else argv)

    def save(section):
        # merge: other checks may run concurrently in other processes
        cur = json.load(open(OUT)) if os.path.isfile(OUT) else {}
        cur["run_dir"] = args.run_dir
        cur[section] = out[section]
        with open(OUT + ".tmp", "w") as fh:
            json.dump(cur, fh, indent=2)
        os.replace(OUT + ".tmp", OUT)

    conv = supercell(io.example("Si"), np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]]))
    a_dft = dft_lattice_constant()
    a_model = out.get("relax", {}).get("a_model_A")
    if "relax" in args.checks or a_model is None:
        rng = np.random.default_rng(0)
        rattled = Crystal.create(conv.numbers, np.asarray(conv.frac) + 0.01 * rng.standard_normal((8, 3)),
                                 np.asarray(conv.lattice) * 1.02)
        t0 = time.time()
        res = fire_relax(pot, params, rattled, fmax=1e-3, max_steps=5000, relax_cell=True)
        L = np.asarray(res.crystal.lattice)
        a_model = float(np.cbrt(abs(np.linalg.det(L))))
        out["relax"] = {"command": cmd, "dtype": args.dtype, "start": "8-atom cubic cell, lattice x 1.02, "
                        "fractional coordinates rattled by 0.01 (std)", "converged": res.converged,
                        "fmax_eV_per_A": res.fmax, "steps": res.n_steps, "a_model_A": a_model, "a_dft_A": a_dft,
                        "rel_error": a_model / a_dft - 1, "lattice": L.tolist(),
                        "stress_GPa": np.asarray(res.stress).tolist(), "wall_s": time.time() - t0}
        print(json.dumps(out["relax"], indent=1), flush=True)
        save("relax")
    big = supercell(conv, 3 * np.eye(3, dtype=int))  # 216 atoms
    big = Crystal.create(big.numbers, big.frac, np.asarray(big.lattice) * a_model / float(conv.lattice[0][0]))
    n = big.n_atoms
    T0 = args.temperature
    if "nve" in args.checks:
        t0 = time.time()
        frames = []

        def nve_summary(done):
            t = np.array([f["time_fs"] for f in frames])
            e = np.array([f["potential_energy"] + f["kinetic_energy"] for f in frames])
            T = np.array([f["temperature"] for f in frames])
            coef = np.polyfit(t * 1e-6, e, 1)
            resid = e - np.polyval(coef, t * 1e-6)
            return {"command": cmd, "dtype": args.dtype, "atoms": n, "steps_requested": args.nve_steps,
                    "steps_done": int(round(t[-1])), "completed": done, "dt_fs": 1.0, "initial_T_K": 2 * T0,
                    "mean_T_K": float(T[len(T) // 10:].mean()),
                    "drift_meV_per_atom_per_ns": float(1000 * coef[0] / n),
                    "rms_fluctuation_meV_per_atom": float(1000 * resid.std() / n),
                    "max_dev_meV_per_atom": float(1000 * np.max(np.abs(e - e[0])) / n),
                    "wall_s": time.time() - t0,
                    "series": {"time_fs": t.tolist(), "total_energy_eV": e.tolist(), "temperature_K": T.tolist()}}

        def cb(step, frame):
            frames.append(frame)
            stop = args.max_wall_s is not None and time.time() - t0 > args.max_wall_s
            if len(frames) % 10 == 0 or stop:
                out["nve"] = nve_summary(False)
                save("nve")
            return stop

        r = run_md(pot, params, big, ensemble="nve", temperature=2 * T0, steps=args.nve_steps, dt=1.0,
                   log_every=args.log_every, seed=1, callback=cb)
        frames.insert(0, {"time_fs": r.time_fs[0], "potential_energy": r.potential_energy[0],
                          "kinetic_energy": r.kinetic_energy[0], "temperature": r.temperature[0]})
        out["nve"] = nve_summary(int(round(r.time_fs[-1])) >= args.nve_steps)
        print(json.dumps({k: v for k, v in out["nve"].items() if k != "series"}, indent=1), flush=True)
        save("nve")
    if "nvt" in args.checks:
        t0 = time.time()
        frames = []
        lang = args.nvt_thermostat == "langevin"
        key = "nvt_langevin" if lang else "nvt"

        def nvt_summary(done):
            t = np.array([f["time_fs"] for f in frames])
            T_all = np.array([f["temperature"] for f in frames])
            keep = t >= args.nvt_equil
            T = T_all[keep]
            dof = 3 * n - 3
            return {"command": cmd, "dtype": args.dtype, "atoms": n, "steps_requested": args.nvt_steps,
                    "steps_done": int(round(t[-1])), "completed": done, "dt_fs": 1.0,
                    "thermostat": "Langevin (BAOAB), friction 0.01/fs, started at 2 T" if lang
                    else "Nose-Hoover chain, tau 100 fs, started at 2 T", "target_K": T0,
                    "equilibration_fs": args.nvt_equil, "n_samples": int(keep.sum()),
                    "mean_T_K": float(T.mean()) if keep.any() else None,
                    "sem_T_K": block_sem(T, 50) if keep.any() else None,
                    "std_T_K": float(T.std()) if keep.any() else None,
                    "expected_std_K": float(T0 * np.sqrt(2 / dof)), "wall_s": time.time() - t0,
                    "series": {"time_fs": t.tolist(), "temperature_K": T_all.tolist()}}

        def cb(step, frame):
            frames.append(frame)
            stop = args.max_wall_s is not None and time.time() - t0 > args.max_wall_s
            if len(frames) % 50 == 0 or stop:
                out[key] = nvt_summary(False)
                save(key)
            return stop

        # both thermostats start from Maxwell-Boltzmann velocities at 2 T: in a harmonic-like solid
        # half the kinetic energy flows into the potential, so T starts near T0 without a transient
        rng = np.random.default_rng(2)
        from difcrys.md.dynamics import masses_of
        from difcrys.units import KB_EV_PER_K, FS
        m = masses_of(big.numbers)[:, None]
        v0 = rng.standard_normal((n, 3)) * np.sqrt(KB_EV_PER_K * 2 * T0 / m) * FS  # Å/fs at 2 T
        v0 -= (m * v0).sum(0) / m.sum()
        if lang:
            r = run_md(pot, params, big, ensemble="nvt_langevin", temperature=T0, steps=args.nvt_steps, dt=1.0,
                       log_every=10, seed=2, friction=0.01, velocities=v0, callback=cb)
        else:
            r = run_md(pot, params, big, ensemble="nvt", temperature=T0, steps=args.nvt_steps, dt=1.0,
                       log_every=10, seed=2, tau_fs=100.0, velocities=v0, callback=cb)
        frames.insert(0, {"time_fs": r.time_fs[0], "temperature": r.temperature[0]})
        out[key] = nvt_summary(int(round(r.time_fs[-1])) >= args.nvt_steps)
        print(json.dumps({k: v for k, v in out[key].items() if k != "series"}, indent=1), flush=True)
        save(key)
    if "npt" in args.checks:
        t0 = time.time()
        r = run_md(pot, params, big, ensemble="npt", temperature=T0, pressure=0.0, steps=args.npt_steps, dt=1.0,
                   log_every=10, seed=3, tau_fs=100.0, tau_p_fs=500.0)
        keep = r.time_fs >= args.npt_steps / 3
        a_npt = np.cbrt(r.volume[keep] / 27.0)
        out["npt"] = {"command": cmd, "dtype": args.dtype, "atoms": n, "steps": args.npt_steps, "dt_fs": 1.0,
                      "target_K": T0, "target_GPa": 0.0, "tau_T_fs": 100.0, "tau_P_fs": 500.0,
                      "mean_T_K": float(r.temperature[keep].mean()),
                      "mean_P_GPa": float(r.pressure_GPa[keep].mean()), "sem_P_GPa": block_sem(r.pressure_GPa[keep], 50),
                      "mean_a_A": float(a_npt.mean()), "a_relaxed_0K_A": a_model,
                      "thermal_expansion_rel": float(a_npt.mean() / a_model - 1),
                      "conserved_ptp_meV_per_atom": float(1000 * np.ptp(r.conserved) / n),
                      "wall_s": time.time() - t0,
                      "series": {"time_fs": r.time_fs.tolist(), "volume_A3": r.volume.tolist(),
                                 "temperature_K": r.temperature.tolist(), "pressure_GPa": r.pressure_GPa.tolist()}}
        print(json.dumps({k: v for k, v in out["npt"].items() if k != "series"}, indent=1), flush=True)
        save("npt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
