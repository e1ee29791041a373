"""Powder-XRD throughput: difcrys (batched, jitted) vs pymatgen's XRDCalculator on the same structures.

Measures patterns per second for
  * pymatgen ``XRDCalculator.get_pattern`` (one structure at a time, Cu Kα, 2θ 0–90°);
  * difcrys ``xrd_peaks_batch`` end to end (host hkl enumeration + one vmapped jit call +
    peak tables), after a warm-up call that compiles;
  * the jitted, vmapped device part alone (stick intensities for pre-enumerated reflections);
  * continuous profiles: vmapped ``powder_pattern`` (Kα doublet, pseudo-Voigt) on a
    4096-point grid, every peak on the whole grid and windowed to ±2°.

Usage: python benchmarks/xrd_speed.py [--n 200] [--batch 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from difcrys.xrd import radiation  # noqa: E402
from difcrys.xrd.api import _batched_intensities, _padded_inputs, _prepare, bucket, xrd_peaks_batch  # noqa: E402
from difcrys.xrd.pattern import Profile, powder_pattern  # noqa: E402
from difcrys.xrd.reflections import batch_reflections, pad_reflections, reflections  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("DIFCRYS_DATA", ROOT.parent / "shared" / "data"))


def timeit(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None):
    from pymatgen.analysis.diffraction.xrd import XRDCalculator
    from pymatgen.core import Structure

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="number of mp_20 structures")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    df = pd.read_csv(DATA / "mp_20_xrd_subset" / "test_subset.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = [Structure.from_str(c, fmt="cif") for c in df.cif[: args.n]]
    calc = XRDCalculator("CuKa")
    res = {"n_structures": len(structures), "device": str(jax.devices()[0]), "batch": args.batch}

    t = timeit(lambda: [calc.get_pattern(s) for s in structures], repeat=1)
    res["pymatgen_patterns_per_s"] = len(structures) / t

    batches = [structures[i:i + args.batch] for i in range(0, len(structures), args.batch)]
    xrd_peaks_batch(batches[0])  # compile
    t = timeit(lambda: [xrd_peaks_batch(b) for b in batches], repeat=1)
    res["difcrys_end_to_end_patterns_per_s"] = len(structures) / t

    # device part only: pre-enumerated, padded reflections of one batch
    lam = radiation.wavelength("CuKa")
    preps = [_prepare(s, lam, 0.0, 90.0, "doyle_turner", None, None) for s in batches[0]]
    na = -(-max(p.crystal.n_atoms for p in preps) // 8) * 8
    cap = bucket(max(p.refl.capacity for p in preps))
    inputs = _padded_inputs(preps, na, cap)

    def device():
        tt, I = _batched_intensities(*inputs[:3], lam, 0.0, 90.0, inputs[3], inputs[4], 1.0, table="doyle_turner")
        I.block_until_ready()

    device()
    t = timeit(device)
    res["difcrys_device_stick_patterns_per_s"] = len(preps) / t

    # continuous profiles on a 4096-point grid (Kα doublet)
    grid = np.linspace(5, 90, 4096)
    (l1, l2), (w1, w2) = radiation.kalpha_doublet("Cu")
    refl = [reflections(p.crystal, l1, (0, 92)) for p in preps]
    capr = max(r.capacity for r in refl)
    refl = batch_reflections([pad_reflections(r, capr, max(r.n_groups, 1)) for r in refl])
    prof = Profile(U=0.01, V=-0.005, W=0.005, eta0=0.5)
    fn = jax.jit(jax.vmap(lambda c, r: powder_pattern(c, r, grid, (l1, l2), (w1, w2), profile=prof)))
    fn(inputs[0], refl).block_until_ready()
    t = timeit(lambda: fn(inputs[0], refl).block_until_ready())
    res["difcrys_profile_patterns_per_s"] = len(preps) / t
    # the same with each peak evaluated within ±2° (window of 97 grid points each side)
    fnw = jax.jit(jax.vmap(lambda c, r: powder_pattern(c, r, grid, (l1, l2), (w1, w2), profile=prof, window=97)))
    fnw(inputs[0], refl).block_until_ready()
    t = timeit(lambda: fnw(inputs[0], refl).block_until_ready())
    res["difcrys_profile_windowed_patterns_per_s"] = len(preps) / t
    for k, v in res.items():
        print(f"{k:40s} {v:.1f}" if isinstance(v, float) else f"{k:40s} {v}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
