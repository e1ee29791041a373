"""Gather the DeepH experiment's measured numbers into ``experiments/deeph/results.json``.

Reads: the generated data (``data/*.npz`` settings: DFT settings and wall times), the run
summaries (``summary.json`` of the graphene and Si64 runs), ``tbg.json``, ``scaling.json`` and the
other JSON files of this folder. Entries of an existing ``results.json`` whose source is not on
this machine (run folders are not kept in the repository) are kept as they are.

Usage::

    python experiments/deeph/collect.py [--graphene-run runs/deeph_graphene --si64-run runs/deeph_si64]
        [--run NAME=RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--graphene-run", default="runs/deeph_graphene")
    ap.add_argument("--si64-run", default="runs/deeph_si64")
    ap.add_argument("--run", action="append", default=None, metavar="NAME=DIR",
                    help="further run summaries to gather (default: the session-4/5 runs below)")
    args = ap.parse_args(argv)
    extra = args.run or ["si64_large=runs/deeph_si64_large", "si64_two_centre=runs/deeph_si64_2c",
                         "si64_two_centre_bands=runs/deeph_si64_2c_bands",
                         "si64_two_centre_bands_mesh=runs/deeph_si64_2c_bands_mesh",
                         "graphene_two_centre=runs/deeph_graphene_2c",
                         "graphene_two_centre_product=runs/deeph_graphene_2c_product",
                         "graphene_two_centre_3b=runs/deeph_graphene_2c_3b",
                         "graphene_two_centre_env_band_selected=runs/deeph_graphene_env",
                         "graphene_two_centre_env=runs/deeph_graphene_env2",
                         "graphene_two_centre_env_onsite_2700s=runs/deeph_graphene_env_onsite",
                         "graphene_gauge=runs/deeph_graphene_gauge",
                         "graphene_gauge_3x3_finetune=runs/deeph_graphene_gauge_3x3",
                         "graphene_gauge_3x3_scratch=runs/deeph_graphene_gauge_3x3s_before_anneal",
                         "graphene_gauge_3x3_scratch_anneal=runs/deeph_graphene_gauge_3x3s",
                         "graphene_gauge_3x3_scratch_anneal_bands=runs/deeph_graphene_gauge_3x3s_annealb"]
    old = {}
    if os.path.isfile(os.path.join(HERE, "results.json")):
        with open(os.path.join(HERE, "results.json")) as fh:
            old = json.load(fh)
    res = {"data": {}, "commands": {
        "generate": "nice -n 10 python experiments/deeph/generate.py --set graphene|graphene3|bilayer ...",
        "train_graphene": "difcrys train configs/hamiltonian_graphene.yaml --run-dir runs/deeph_graphene",
        "train_si64": "difcrys train configs/hamiltonian_si64.yaml --run-dir runs/deeph_si64",
        "tbg": "python experiments/deeph/tbg.py runs/deeph_graphene --json experiments/deeph/tbg.json",
        "scaling": "python benchmarks/hamiltonian_scaling.py runs/deeph_graphene --json experiments/deeph/scaling.json",
        "collect": "python experiments/deeph/collect.py",
        "train_si64_two_centre": "difcrys train configs/hamiltonian_si64.yaml --variant two_centre --run-dir runs/deeph_si64_2c"
                                 " (then --variant two_centre_bands --run-dir runs/deeph_si64_2c_bands, then "
                                 "--variant two_centre_bands_mesh --run-dir runs/deeph_si64_2c_bands_mesh)",
        "si64_bands_compare": "difcrys bands runs/deeph_si64_2c_bands_mesh ../shared/data/deeptb_si64_hamiltonian "
                              "--compare ../shared/data/deeptb_si64_hamiltonian --electrons 256 --points 60 "
                              "--dos-mesh 3 3 3 --dos-width 0.15 --plot experiments/deeph/si64_bands_model_mesh.png --json",
        "train_graphene_two_centre": "difcrys train configs/hamiltonian_graphene.yaml --variant two_centre "
                                     "--run-dir runs/deeph_graphene_2c",
        "tbg_two_centre": "python experiments/deeph/tbg.py runs/deeph_graphene_2c --m 29 --tile 25 "
                          "--json experiments/deeph/tbg29_two_centre.json",
        "baselines": "python experiments/deeph/baselines.py fit|split|onsite|shift ...",
        "train_graphene_gauge": "difcrys train configs/hamiltonian_graphene.yaml --variant two_centre_env_gauge "
                                "--run-dir runs/deeph_graphene_gauge (then --variant two_centre_env_gauge_3x3 "
                                "--run-dir runs/deeph_graphene_gauge_3x3); --variant two_centre_env_gauge_3x3_scratch "
                                "--run-dir runs/deeph_graphene_gauge_3x3s, then --variant "
                                "two_centre_env_gauge_3x3_scratch_more --run-dir runs/deeph_graphene_gauge_3x3s (resumes; "
                                "its folder was then copied to runs/deeph_graphene_gauge_3x3s_before_anneal and to "
                                "runs/deeph_graphene_gauge_3x3s_annealb), then --variant "
                                "two_centre_env_gauge_3x3_scratch_anneal --run-dir runs/deeph_graphene_gauge_3x3s and "
                                "--variant two_centre_env_gauge_3x3_scratch_anneal_bands --run-dir "
                                "runs/deeph_graphene_gauge_3x3s_annealb (both resume at epoch 493)",
        "generate_graphene3": "taskset -c 0 python experiments/deeph/generate.py --set graphene3 --start 1 --n 40",
        "generate_graphene4": "taskset -c 1 python experiments/deeph/generate.py --set graphene4 --start 0 --n 3 "
                              "(and --start 3 --n 3, --start 6 --n 1 on the other core; 007-010 for later training: --start 7 --n 2, "
                              "--start 9 --n 2)",
        "evaluate_4x4": "difcrys evaluate RUN 'experiments/deeph/data/graphene4_00[0-6].npz' --which best --out "
                        "experiments/deeph/eval_graphene_gauge_3x3s_anneal_4x4.json (RUN = runs/deeph_graphene_gauge_3x3s; "
                        "runs/deeph_graphene_gauge_3x3s_before_anneal -> eval_graphene_gauge_3x3s_7505s_4x4.json)",
        "evaluate_anneal_bands_last": "difcrys evaluate runs/deeph_graphene_gauge_3x3s_annealb --which last --out "
                                      "experiments/deeph/eval_graphene_gauge_3x3s_anneal_bands_last.json",
        "evaluate": "difcrys evaluate RUN --which best --out experiments/deeph/eval_<name>.json"}}
    for k, v in old.items():
        if k not in ("commands",):
            res.setdefault(k, v)
    res["data"] = {}
    for f in sorted(glob.glob(os.path.join(HERE, "data", "*.npz"))):
        with np.load(f) as z:
            s = json.loads(str(z["settings"]))
            res["data"][os.path.basename(f)] = {"n_atoms": int(len(z["numbers"])), "n_blocks": int(len(z["pairs"])),
                                                "wall_s": s.get("wall_s"), "t_scf_s": float(z["t_scf_s"]),
                                                "kmesh": s.get("kmesh"), "energy_ha": float(z["energy_ha"]),
                                                "imag_max_ev": float(z["imag_max_ev"])}
            res["dft_settings"] = {k: v for k, v in s.items() if k not in ("wall_s", "spacing_ang", "shift_frac")}
    runs = [("graphene", args.graphene_run), ("si64", args.si64_run)] + [tuple(r.split("=", 1)) for r in extra]
    for name, run in runs:
        p = os.path.join(run, "summary.json")
        if os.path.isfile(p):
            with open(p) as fh:
                res[name] = json.load(fh)
    for name in ("tbg", "tbg29", "tbg29_two_centre", "scaling", "scaling_1core", "baselines_fit_graphene",
                 "baselines_fit_si64", "baselines_split_si64_large", "baselines_split_si64_2c_bands_mesh",
                 "baselines_shift_graphene_2c", "baselines_fit_graphene_bond_env", "baselines_shift_graphene_env2",
                 "baselines_shift_graphene_env2_val", "baselines_shift_graphene_env_onsite", "scaling_env",
                 "eval_graphene_env_onsite_final") + tuple(
                     os.path.basename(f)[:-5] for f in sorted(glob.glob(os.path.join(HERE, "eval_*.json")))):
        p = os.path.join(HERE, f"{name}.json")
        if os.path.isfile(p):
            with open(p) as fh:
                res[name] = json.load(fh)
    with open(os.path.join(HERE, "results.json"), "w") as fh:
        json.dump(res, fh, indent=2, default=float)
    print(json.dumps({k: (v if k != "data" else len(v)) for k, v in res.items() if k != "commands"}, indent=1,
                     default=float)[:4000])


if __name__ == "__main__":
    main()
