"""Where the time of a difcrys SCF goes: compilation vs execution, time per LOBPCG iteration.

    python benchmarks/dft_profile.py [--system si8|si2] [--iters 1 5 9]

Runs the benchmark cell of ``dft_vs_abinit.py`` in-process: the first SCF (compilation included),
the same SCF again (compiled), forces + stress (first call and again), then the eigensolver alone
with a fixed number of iterations from the same start, whose slope is the cost of one LOBPCG
iteration over all k-points. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", default="si8", choices=["si2", "si8"])
    ap.add_argument("--iters", type=int, nargs="+", default=[1, 5, 9])
    args = ap.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    from dft_vs_abinit import systems

    from difcrys.crystal import Crystal
    from difcrys.dft import derivatives, eigensolvers
    from difcrys.dft import scf as S
    from difcrys.dft import terms as T
    from difcrys.units import BOHR_ANG

    s = systems()[args.system]
    cr = Crystal.create(s["numbers"], s["frac"], np.asarray(s["lattice"]) * BOHR_ANG)
    setup, params = S.prepare(cr, s["ecut"], s["kgrid"], n_bands=s["nband"])
    b = setup.basis
    print(f"{args.system}: {len(b.kpts)} k-points ({len(eigensolvers.real_k_pairs(b))} time-reversal invariant), "
          f"npw <= {b.miller.shape[1]}, {setup.n_bands} bands, FFT {b.fft_shape}")
    walls = []
    for rep in range(2):
        t0 = time.perf_counter()
        r = S.run_scf(setup=setup, params=params, tol=1e-9, progress=False)
        t1 = time.perf_counter()
        f, st = derivatives.forces_and_stress(r)
        jax.block_until_ready((f, st))
        walls.append((t1 - t0, time.perf_counter() - t1))
        print(f"run {rep + 1}: SCF {t1 - t0:.2f} s ({r.n_iter} steps), forces + stress {walls[-1][1]:.2f} s", flush=True)
    print(f"compilation (run 1 - run 2): SCF {walls[0][0] - walls[1][0]:.2f} s, "
          f"forces + stress {walls[0][1] - walls[1][1]:.2f} s")

    rho = S.initial_density(setup, params)
    X0 = eigensolvers.initial_guess(setup, params["lattice"])
    veff, _ = T.effective_potential(setup, params["lattice"], params["frac"], params["psp"], params["xc"], rho)
    times = []
    for n in args.iters:
        fn = jax.jit(lambda v, X, n=n: eigensolvers._lobpcg(setup, params["lattice"], params["frac"], params["psp"],
                                                             v, X, 1e-14, max_iter=n))
        jax.block_until_ready(fn(veff, X0))
        t0 = time.perf_counter()
        jax.block_until_ready(fn(veff, X0))
        times.append(time.perf_counter() - t0)
        print(f"LOBPCG, {n} iterations (all k-points): {times[-1]:.3f} s", flush=True)
    slope = np.polyfit(args.iters, times, 1)[0]
    print(f"per LOBPCG iteration: {slope:.3f} s = {1000 * slope / len(b.kpts):.1f} ms per k-point")


if __name__ == "__main__":
    main()
