"""Silicon with the plane-wave DFT: E(V) and Birch–Murnaghan fit next to ABINIT at identical settings,
band structure, DOS and gap, d(gap)/d(strain) by implicit differentiation next to finite differences,
and the lattice constant relaxed with the stress.

Usage (from the repository root):
    python experiments/silicon/run.py [--ecut 16] [--kpts 4] [--quick]

Writes experiments/silicon/results.json and bands_dos.png. ABINIT (Debian package `abinit`)
is used for the reference fit when it is installed.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent


def birch_murnaghan(v, e0, v0, b0, bp):
    eta = (v0 / v) ** (2.0 / 3.0)
    return e0 + 9.0 * v0 * b0 / 16.0 * ((eta - 1) ** 3 * bp + (eta - 1) ** 2 * (6 - 4 * eta))


def fit_bm(volumes, energies):
    """Fit the 3rd-order Birch–Murnaghan equation (F. Birch, Phys. Rev. 71, 809 (1947)); energies eV, volumes Å³."""
    from scipy.optimize import curve_fit

    c = np.polyfit(volumes, energies, 2)
    v0 = -c[1] / (2 * c[0])
    b0 = 2 * c[0] * v0
    p, _ = curve_fit(birch_murnaghan, volumes, energies, p0=[min(energies), v0, b0, 4.0], maxfev=20000)
    return {"e0_ev": p[0], "v0_ang3": p[1], "b0_gpa": p[2] * 160.21766208, "bp": p[3]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ecut", type=float, default=16.0)
    ap.add_argument("--kpts", type=int, default=4, help="N for an NxNxN Monkhorst-Pack grid (shift 0.5)")
    ap.add_argument("--quick", action="store_true", help="fewer points (smoke test)")
    args = ap.parse_args(argv)

    import jax

    from difcrys.crystal import Crystal
    from difcrys.dft import derivatives, response
    from difcrys.dft.bandstructure import band_structure, plot_bands_dos
    from difcrys.dft.scf import prepare, run_scf
    from difcrys.units import ANG_BOHR, BOHR_ANG, HARTREE_EV

    fcc = np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    frac = [[0, 0, 0], [0.25, 0.25, 0.25]]
    ecut, k = args.ecut, (args.kpts,) * 3
    shift = (0.5, 0.5, 0.5)
    out = {"settings": {"ecut_ha": ecut, "kpts": list(k), "shift": list(shift), "xc": "lda-teter",
                        "psp": "GTH-PADE Si-q4", "command": "python experiments/silicon/run.py " + " ".join(
                            sys.argv[1:])}}

    # ------------------------------------------------------------------ E(V)
    a_list = np.linspace(5.30, 5.50, 5 if args.quick else 9)
    energies, volumes, fft_shapes = [], [], []
    t0 = time.perf_counter()
    for a in a_list:
        si = Crystal.create([14, 14], frac, fcc * a)
        res = run_scf(si, ecut, k, shift=shift, tol=1e-10, progress=False)
        energies.append(res.energy * HARTREE_EV)
        volumes.append(a**3 / 4)
        fft_shapes.append(list(res.setup.basis.fft_shape))
        print(f"a = {a:.4f} Å  E = {res.energy:.10f} Ha  ({res.n_iter} it)", flush=True)
    fit = fit_bm(np.array(volumes), np.array(energies))
    fit["a0_ang"] = (4 * fit["v0_ang3"]) ** (1 / 3)
    out["eos"] = {"a_ang": a_list.tolist(), "energy_ev": energies, "fit": fit,
                  "wall_time_s": time.perf_counter() - t0}
    print("difcrys BM fit:", fit, flush=True)

    # ABINIT at the same settings (same psp file, FFT grid, k-points)
    try:
        from difcrys.dft.abinit import find_abinit, run_abinit

        if find_abinit():
            e_ab = []
            for a, ng in zip(a_list, fft_shapes):
                r = run_abinit(fcc * a * ANG_BOHR, [14, 14], frac, ecut, k, shift=shift, ngfft=ng, nband=8)
                e_ab.append(r["etotal"] * HARTREE_EV)
            fab = fit_bm(np.array(volumes), np.array(e_ab))
            fab["a0_ang"] = (4 * fab["v0_ang3"]) ** (1 / 3)
            out["eos_abinit"] = {"energy_ev": e_ab, "fit": fab,
                                 "max_energy_diff_ev": float(np.max(np.abs(np.array(e_ab) - energies)))}
            print("ABINIT BM fit:", fab, flush=True)
    except Exception as e:  # reference is optional
        out["eos_abinit"] = {"error": str(e)}

    # ------------------------------------------------------------------ bands, DOS, gap at a0
    a0 = fit["a0_ang"]
    si = Crystal.create([14, 14], frac, fcc * a0)
    res = run_scf(si, ecut, k, shift=shift, tol=1e-10, progress=False)
    bs = band_structure(res, n_points=80)
    plot_bands_dos(res, bs, str(HERE / "bands_dos.png"))
    out["bands"] = {"a_ang": a0, "gap_path_ev": bs["gap_ev"], "labels": bs["labels"]}
    print(f"gap along the path and SCF grid at a0: {bs['gap_ev']:.4f} eV", flush=True)

    # ------------------------------------------------------------------ d(gap)/d(strain): implicit vs FD
    ecut_d = 8.0
    setup, params = prepare(Crystal.create([14, 14], frac, fcc * a0), ecut_d, (2, 2, 2))

    def gap_of_strain(e):
        p = dict(params, lattice=params["lattice"] * (1 + e))
        return response.band_gap(setup, p)

    t0 = time.perf_counter()
    g_imp = float(jax.jit(jax.grad(gap_of_strain))(0.0))
    t_imp = time.perf_counter() - t0
    h = 1e-4
    g_fd = float((jax.jit(gap_of_strain)(h) - jax.jit(gap_of_strain)(-h)) / (2 * h))
    out["dgap_dstrain"] = {"ecut_ha": ecut_d, "kpts": [2, 2, 2], "note": "isotropic strain, fixed basis; Ha per unit strain",
                           "implicit_ha": g_imp, "finite_difference_ha": g_fd,
                           "relative_difference": abs(g_imp - g_fd) / abs(g_fd), "implicit_wall_time_s": t_imp,
                           "implicit_ev": g_imp * HARTREE_EV}
    print("d(gap)/d(strain):", out["dgap_dstrain"], flush=True)

    # ------------------------------------------------------------------ lattice constant from the stress
    a = 5.43
    for it in range(6):
        r = run_scf(Crystal.create([14, 14], frac, fcc * a), ecut, k, shift=shift, tol=1e-10, progress=False)
        p = -float(np.trace(np.asarray(derivatives.stress(r)))) / 3  # GPa
        # Newton step with the fitted bulk modulus: ΔV/V = −ΔP/B with ΔP = −P
        a = a * (1 + p / fit["b0_gpa"]) ** (1 / 3) if abs(p) > 1e-4 else a
        print(f"stress relaxation {it}: a = {a:.5f} Å  P = {p:+.4f} GPa", flush=True)
        if abs(p) < 1e-3:
            break
    out["stress_relaxation"] = {"a_ang": a, "pressure_gpa": p,
                                "note": "a from P = −Tr σ/3 = 0 (fixed-basis stress at each step; basis rebuilt per step)"}
    (HERE / "results.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
