"""Train the equivariant potential on acetylacetone (train_300K) or ethanol (train) and report the
BOTNet/MACE test errors (energy RMSE [meV], force RMSE [meV/Å]).

Usage (from the repository root)::

    python experiments/botnet/run.py acac --time-limit 3600 [--variant test] [--set train.epochs=100]

Writes ``runs/botnet_<name>/`` and merges the measured errors into
``experiments/botnet/results.json``. Data: Batatia et al., "The design space of E(3)-equivariant
atom-centered interatomic potentials" (2022) (``../shared/data/botnet_acac``, ``botnet_ethanol``).
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
sys.path.insert(0, os.path.join(ROOT, "experiments", "mlearn"))


def main(argv=None):
    from run import _override  # experiments/mlearn/run.py

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=["acac", "ethanol"])
    ap.add_argument("--variant", default=None)
    ap.add_argument("--time-limit", type=float, default=None)
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args(argv)

    from difcrys.train.potential import train_potential

    run_dir = args.run_dir or os.path.join(ROOT, "runs", f"botnet_{args.name}" + (f"_{args.variant}" if args.variant else ""))
    ov = _override(args.set)
    if args.time_limit:
        ov.setdefault("train", {})["time_limit_s"] = args.time_limit
    t0 = time.time()
    summary = train_potential(os.path.join(ROOT, "configs", f"{args.name}.yaml"), run_dir, variant=args.variant,
                              overrides=ov)
    with open(os.path.join(run_dir, "config.yaml")) as fh:
        resolved = yaml.safe_load(fh)
    entry = {"tests": {k: {"energy_rmse_meV": 1000 * v["energy_rmse_eV"],
                           "force_rmse_meV_per_A": 1000 * v["forces_rmse"],
                           "energy_mae_meV": 1000 * v["energy_mae_eV"],
                           "force_mae_meV_per_A": 1000 * v["forces_mae"], "n": v["n_structures"]}
                       for k, v in summary["test"].items()},
             "n_train": summary["n_train"], "n_val": summary["n_val"], "epochs": summary["epochs"],
             "stopped": summary["stopped"], "wall_time_s": time.time() - t0, "model": resolved["model"],
             "train": resolved["train"], "loss": resolved["loss"], "variant": args.variant,
             "command": "python experiments/botnet/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
             "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared)"}
    res_path = os.path.join(HERE, "results.json")
    results = json.load(open(res_path)) if os.path.isfile(res_path) else {}
    if args.variant is None:
        results[args.name] = entry
        with open(res_path, "w") as fh:
            json.dump(results, fh, indent=2)
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
