"""Train the equivariant potential on an mlearn element (train split) and evaluate on its test split.

Usage (from the repository root)::

    python experiments/mlearn/run.py Si --time-limit 3000 [--variant test] [--set train.epochs=200]
    python experiments/mlearn/run.py Si --model dpmd --time-limit 780     # the DeepPot-SE baseline

Writes ``runs/mlearn_<El>/`` (checkpoints, metrics, parity plots) and merges the measured test
errors into ``experiments/mlearn/results.json`` (with the settings and the command).
Data: Zuo et al., J. Phys. Chem. A 124, 731 (2020) (``../shared/data/mlearn_zuo2020``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _override(items):
    out = {}
    for item in items or []:
        key, _, val = item.partition("=")
        d = out
        parts = key.split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = yaml.safe_load(val)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("element", choices=["Si", "Ge", "Li", "Mo", "Ni", "Cu"])
    ap.add_argument("--variant", default=None)
    ap.add_argument("--time-limit", type=float, default=None, help="training wall-time limit [s]")
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--set", action="append", default=[], help="override, e.g. train.epochs=100")
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--model", default="equivariant", choices=["equivariant", "dpmd"],
                    help="dpmd: the DeepPot-SE baseline (configs/mlearn_<El>_dpmd.yaml)")
    args = ap.parse_args(argv)

    from difcrys.train.potential import train_potential

    tag = args.element + ("_dpmd" if args.model == "dpmd" else "")
    cfg_path = os.path.join(ROOT, "configs", f"mlearn_{tag}.yaml")
    if not os.path.isfile(cfg_path):
        ap.error(f"no config {cfg_path}")
    run_dir = args.run_dir or os.path.join(ROOT, "runs", f"mlearn_{tag}" + (f"_{args.variant}" if args.variant else ""))
    ov = _override(args.set)
    if args.time_limit:
        ov.setdefault("train", {})["time_limit_s"] = args.time_limit
    t0 = time.time()
    summary = train_potential(cfg_path, run_dir, variant=args.variant, overrides=ov, resume=not args.no_resume)
    test = summary["test"][f"{args.element}_test"]
    with open(os.path.join(run_dir, "config.yaml")) as fh:
        resolved = yaml.safe_load(fh)
    entry = {
        "energy_mae_meV_per_atom": 1000 * test["energy_mae_per_atom_eV"],
        "energy_rmse_meV_per_atom": 1000 * test["energy_rmse_per_atom_eV"],
        "force_mae_eV_per_A": test.get("forces_mae"),
        "force_rmse_eV_per_A": test.get("forces_rmse"),
        "n_test": test["n_structures"],
        "n_train": summary["n_train"], "n_val": summary["n_val"],
        "epochs": summary["epochs"], "stopped": summary["stopped"],
        "wall_time_s": time.time() - t0,
        "model": resolved["model"], "train": resolved["train"], "loss": resolved["loss"],
        "variant": args.variant,
        "command": "python experiments/mlearn/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared)",
    }
    res_path = os.path.join(HERE, "results.json")
    results = {}
    if os.path.isfile(res_path):
        with open(res_path) as fh:
            results = json.load(fh)
    if args.variant is None:
        results[tag] = entry
        with open(res_path, "w") as fh:
            json.dump(results, fh, indent=2)
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
