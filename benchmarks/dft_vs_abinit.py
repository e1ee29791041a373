"""difcrys vs ABINIT side by side: total energies, forces, stress and wall time at identical settings.

Both codes get the same GTH-PADE parameters (ABINIT reads them as pspcod-10 files written by
difcrys.dft.abinit), the same ecut, k-points, FFT grid, bands and smearing. Wall times:
ABINIT's whole run (process start to end, as measured by run_abinit) and difcrys' whole
``difcrys scf`` command run as a subprocess (Python start-up, JIT compilation and the SCF), so
the ratio is a like-for-like user-visible time. difcrys is timed twice: "cold" with an empty
persistent compilation cache and "warm" when the same command runs again (XLA programs
loaded from the cache); the ratio column uses the warm time.

Usage:
    python benchmarks/dft_vs_abinit.py [--systems si2 si8 c2 graphene al] [--scaling]

``--scaling`` adds the cost growth of difcrys from Si8 to Si64 (Γ point, ecut 8) — long.
Needs the Debian package ``abinit``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

FCC = np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
SI8 = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0], [0.25, 0.25, 0.25], [0.25, 0.75, 0.75],
       [0.75, 0.25, 0.75], [0.75, 0.75, 0.25]]


def systems():
    si8_lat = np.diag([10.26, 10.30, 10.22])
    si8_frac = np.array(SI8)
    si8_frac[1] += [0.01, 0.02, -0.015]
    return {
        "si2": dict(lattice=FCC * 10.26, numbers=[14, 14], frac=[[0, 0, 0], [0.25, 0.25, 0.25]], ecut=15.0,
                    kgrid=(4, 4, 4), nband=8, smearing=None),
        "si8": dict(lattice=si8_lat, numbers=[14] * 8, frac=si8_frac.tolist(), ecut=15.0, kgrid=(2, 2, 2),
                    nband=20, smearing=None),
        "c2": dict(lattice=FCC * 6.74, numbers=[6, 6], frac=[[0, 0, 0], [0.25, 0.25, 0.25]], ecut=20.0,
                   kgrid=(4, 4, 4), nband=8, smearing=None),
        "graphene": dict(lattice=[[4.65, 0, 0], [-2.325, 4.0270, 0], [0, 0, 15.0]], numbers=[6, 6],
                         frac=[[1 / 3, 2 / 3, 0.5], [2 / 3, 1 / 3, 0.5]], ecut=12.0, kgrid=(6, 6, 1), nband=8,
                         smearing=("fermi-dirac", 0.01)),
        "al": dict(lattice=FCC * 7.60, numbers=[13], frac=[[0, 0, 0]], ecut=10.0, kgrid=(8, 8, 8), nband=6,
                   smearing=("gaussian", 0.02)),
    }


OCCOPT = {"fermi-dirac": 3, "gaussian": 7, "cold-a": 4}


def write_structure(s, path):
    from difcrys import io
    from difcrys.crystal import Crystal
    from difcrys.units import BOHR_ANG

    io.write(path, Crystal.create(s["numbers"], s["frac"], np.asarray(s["lattice"]) * BOHR_ANG))


def run_difcrys_cli(s, ngfft, forces=True):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "structure.cif")
        write_structure(s, path)
        cmd = [sys.executable, "-m", "difcrys.cli", "scf", path, "--ecut", str(s["ecut"]), "--kpts",
               *map(str, s["kgrid"]), "--fft-shape", *map(str, ngfft), "--bands-count", str(s["nband"]),
               "--tol", "1e-9", "--json", "--quiet"]
        if s["smearing"]:
            cmd += ["--smearing", f"{s['smearing'][0]}:{s['smearing'][1]}"]
        if forces:
            cmd += ["--forces", "--stress"]
        walls = []
        with tempfile.TemporaryDirectory() as cache:
            for _ in range(2):  # cold (empty compilation cache), then warm (cached compilation)
                t0 = time.perf_counter()
                p = subprocess.run(cmd, capture_output=True, text=True,
                                   env=dict(os.environ, OPENBLAS_NUM_THREADS="1", DIFCRYS_JAX_CACHE=cache))
                walls.append(time.perf_counter() - t0)
                if p.returncode:
                    raise RuntimeError(p.stderr[-2000:])
        return json.loads(p.stdout), walls


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", nargs="*", default=["si2", "si8", "c2", "graphene", "al"])
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument("--scaling-from", type=int, default=0, help="skip the first N cells of the scaling series")
    ap.add_argument("--json", default=None, help="also write the table to this JSON file")
    args = ap.parse_args(argv)

    from difcrys.dft.abinit import find_abinit, run_abinit
    from difcrys.units import HA_PER_BOHR_EV_PER_ANG, HARTREE_EV

    if not find_abinit():
        sys.exit("abinit not found: apt-get install abinit")
    rows = []
    S = systems()
    print(f"{'system':9s} {'E difcrys [Ha]':>18s} {'E ABINIT [Ha]':>18s} {'dE/atom':>9s} {'dF [Ha/Bohr]':>12s} "
          f"{'dS [GPa]':>9s} {'t cold':>8s} {'t warm':>8s} {'t ABINIT':>9s} {'ratio':>6s}")
    for name in args.systems:
        s = S[name]
        sm = s["smearing"]
        ab = run_abinit(np.asarray(s["lattice"]), s["numbers"], s["frac"], s["ecut"], s["kgrid"], nband=s["nband"],
                        smearing=None if sm is None else (OCCOPT[sm[0]], sm[1]), forces=True, stress=True,
                        extra={"chksymtnons": 0})
        ours, (wall_cold, wall) = run_difcrys_cli(s, ab["ngfft"])
        n = len(s["numbers"])
        f_ours = np.asarray(ours["forces_ev_per_ang"]) / HA_PER_BOHR_EV_PER_ANG
        s_ours = np.asarray(ours["stress_gpa"])
        row = {"system": name, "energy_difcrys_ha": ours["energy_ha"], "energy_abinit_ha": ab["etotal"],
               "de_per_atom_ha": (ours["energy_ha"] - ab["etotal"]) / n,
               "max_force_diff_ha_per_bohr": float(np.abs(f_ours - np.asarray(ab["forces"])).max()),
               "max_stress_diff_gpa": float(np.abs(s_ours - np.asarray(ab["stress"]) * 29421.015697).max()),
               "wall_difcrys_cli_cold_s": wall_cold, "wall_difcrys_cli_s": wall, "wall_abinit_s": ab["wall_time_s"],
               "ratio_cold": wall_cold / ab["wall_time_s"], "ratio": wall / ab["wall_time_s"],
               "scf_wall_in_process_s": ours["wall_time_s"], "ngfft": ab["ngfft"], "n_iter": ours["n_iter"]}
        rows.append(row)
        print(f"{name:9s} {row['energy_difcrys_ha']:18.10f} {row['energy_abinit_ha']:18.10f} "
              f"{row['de_per_atom_ha']:9.1e} {row['max_force_diff_ha_per_bohr']:12.1e} {row['max_stress_diff_gpa']:9.1e} "
              f"{wall_cold:8.2f} {wall:8.2f} {ab['wall_time_s']:9.2f} {row['ratio']:6.2f}", flush=True)
    if args.scaling:
        from difcrys.crystal import Crystal, supercell
        from difcrys.dft.scf import run_scf
        from difcrys.units import BOHR_ANG

        base = Crystal.create([14] * 8, SI8, np.eye(3) * 10.26 * BOHR_ANG)
        print("\ncost growth (Γ point, ecut 8 Ha, difcrys in-process incl. compilation, vs ABINIT):")
        for P in ([1, 1, 1], [2, 1, 1], [2, 2, 1], [2, 2, 2])[int(args.scaling_from):]:
            c = supercell(base, np.diag(P))
            t0 = time.perf_counter()
            r = run_scf(c, 8.0, (1, 1, 1), tol=1e-8, progress=False)
            t = time.perf_counter() - t0
            print(f"  (difcrys Si{c.n_atoms}: {t:.1f} s; running ABINIT)", flush=True)
            ab = run_abinit(np.asarray(c.lattice) / BOHR_ANG, np.asarray(c.numbers).tolist(),
                            np.asarray(c.frac).tolist(), 8.0, (1, 1, 1), ngfft=list(r.setup.basis.fft_shape),
                            nband=r.setup.n_bands, extra={"maxnsym": 2048})  # Si64: 384 operations
            rows.append({"system": f"si{c.n_atoms}_gamma", "n_atoms": c.n_atoms, "wall_difcrys_s": t,
                         "wall_abinit_s": ab["wall_time_s"], "de_per_atom_ha": (r.energy - ab["etotal"]) / c.n_atoms,
                         "npw": int(r.setup.basis.npw.max())})
            print(f"  Si{c.n_atoms:<3d} npw {int(r.setup.basis.npw.max()):6d}  difcrys {t:8.1f} s  ABINIT "
                  f"{ab['wall_time_s']:8.1f} s  dE/atom {rows[-1]['de_per_atom_ha']:.1e} Ha", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
