"""Stick patterns of difcrys vs pymatgen's XRDCalculator on every mp_20-subset and perov_5-test structure.

Same wavelength (Cu Kα, 1.54184 Å), 2θ 0–90°, no Debye–Waller factor, the
pymatgen-compatible (Doyle–Turner/Mott–Bethe) scattering factors. For every
structure each peak of either side is matched to the nearest peak of the other;
reported: the largest position and intensity differences, and the number of
peaks above 0.5 (of 100) without a partner within 1e-4°.

Usage: python experiments/xrd/compare_pymatgen.py [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import DATA, update_results  # noqa: E402

from difcrys.xrd.api import xrd_peaks_batch  # noqa: E402

SETS = {"mp_20_xrd_subset": "test_subset.csv", "perov_5_test": "test.csv"}


def compare(structures, chunk=250):
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    calc = XRDCalculator("CuKa")
    stats = {"n_structures": 0, "n_peaks_pymatgen": 0, "n_peaks_difcrys": 0, "max_position_diff_deg": 0.0,
             "max_intensity_diff": 0.0, "unmatched_peaks_above_0.5": 0, "multiplicity_mismatches": 0}
    t_ours = t_pmg = 0.0
    for start in range(0, len(structures), chunk):
        part = structures[start:start + chunk]
        t = time.time()
        ours = xrd_peaks_batch(part, "CuKa", (0, 90))
        t_ours += time.time() - t
        for s, q in zip(part, ours):
            t = time.time()
            p = calc.get_pattern(s, two_theta_range=(0, 90))
            t_pmg += time.time() - t
            px, py = np.asarray(p.x), np.asarray(p.y)
            stats["n_structures"] += 1
            stats["n_peaks_pymatgen"] += len(px)
            stats["n_peaks_difcrys"] += len(q.two_theta)
            for a, ai, b, bi in ((px, py, q.two_theta, q.intensity), (q.two_theta, q.intensity, px, py)):
                for tt, i in zip(a, ai):
                    j = int(np.argmin(np.abs(b - tt))) if len(b) else -1
                    if j < 0 or abs(b[j] - tt) > 1e-4:
                        stats["unmatched_peaks_above_0.5"] += int(i > 0.5)
                        continue
                    stats["max_position_diff_deg"] = max(stats["max_position_diff_deg"], float(abs(b[j] - tt)))
                    stats["max_intensity_diff"] = max(stats["max_intensity_diff"], float(abs(bi[j] - i)))
            if len(px) == len(q.two_theta):
                mp = [sum(f["multiplicity"] for f in fam) for fam in p.hkls]
                mq = [sum(m for _, m in fam) for fam in q.hkls]
                stats["multiplicity_mismatches"] += int(mp != mq)
            else:
                stats["multiplicity_mismatches"] += 1
        print(f"  {start + len(part)}/{len(structures)}", stats, flush=True)
    stats["seconds_difcrys"] = round(t_ours, 1)
    stats["seconds_pymatgen"] = round(t_pmg, 1)
    return stats


def main(argv=None):
    from pymatgen.core import Structure

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)
    out = {}
    for name, fname in SETS.items():
        folder = "perov_5" if name.startswith("perov") else name
        df = pd.read_csv(DATA / folder / fname)
        cifs = list(df.cif[: args.limit])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structures = [Structure.from_str(c, fmt="cif") for c in cifs]
        print(name, len(structures), flush=True)
        out[name] = compare(structures)
    out["acceptance"] = {"position_tol_deg": 1e-4, "intensity_tol": 0.05, "unmatched_threshold": 0.5,
                         "passed": all(v["max_position_diff_deg"] < 1e-4 and v["max_intensity_diff"] < 0.05
                                       and v["unmatched_peaks_above_0.5"] == 0 for v in out.values())}
    if args.limit is None:
        update_results("compare_pymatgen", out)
    print(out)
    return out


if __name__ == "__main__":
    main()
