"""Prediction time and memory of the Hamiltonian network versus atom count (graphene supercells).

Each size runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its own.
Reported per size: atoms, edges (blocks), graph time, first call (compile + run), second call
(run only), and peak RSS. Linear growth shows as constant time and memory per atom.

Usage::

    python benchmarks/hamiltonian_scaling.py RUN_DIR [--sizes 23 32 45 72] [--tile 30] [--json out.json]

Direct prediction holds every edge's intermediate features at once (measured ≈ 19 KB per edge
for the graphene model: 3.9 GiB peak at 4,050 atoms), so beyond a few thousand atoms use
``--tile`` (:meth:`HamiltonianModel.predict_operator_tiled`): memory is then set by the tile
cluster, and its time (which includes the one compilation) is reported as ``predict_s``.

(``--sizes`` are supercell sizes n of an n×n graphene cell, 2n² atoms: 23 → 1058, 72 → 10368).
Without a trained run, ``--untrained CONFIG.yaml`` times randomly initialised parameters of the
model in CONFIG (same cost).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def one(run_dir, n, untrained, tile):
    import resource
    import time

    import jax
    import numpy as np

    sys.path.insert(0, os.path.join(HERE, "..", "experiments", "deeph"))
    from structures import graphene_supercell

    if untrained:
        from difcrys.nn.hamiltonian import HamiltonianConfig, HamiltonianModel
        from difcrys.train.config import load_yaml

        model = HamiltonianModel(HamiltonianConfig.from_dict(load_yaml(untrained)["model"]))
        params = model.init(jax.random.PRNGKey(0))
    else:
        from difcrys.train.hamiltonian import load_run

        model, params = load_run(run_dir)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    c = graphene_supercell(n)
    rng = np.random.default_rng(0)
    pos = np.asarray(c.frac) @ np.asarray(c.lattice) + rng.normal(0, 0.03, (len(c.numbers), 3))
    from difcrys.crystal import Crystal

    c = Crystal(numbers=c.numbers, frac=pos @ np.linalg.inv(c.lattice), lattice=c.lattice, mask=c.mask)
    if tile:
        t_graph = 0.0
        t0 = time.time()
        op = model.predict_operator_tiled(params, c, tile=tile)
        t_first = time.time() - t0
        t_second = t_first  # one pass: compilation happens on the first tile only
    else:
        t0 = time.time()
        g = model.graph(c)
        t_graph = time.time() - t0
        t0 = time.time()
        op = model.predict_operator(params, c, g)
        t_first = time.time() - t0
        t0 = time.time()
        op = model.predict_operator(params, c, g)
        t_second = time.time() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n_atoms": int(len(c.numbers)), "n_blocks": int(len(op.pairs)), "graph_s": t_graph,
            "first_call_s": t_first, "predict_s": t_second, "peak_rss_mib": rss, "rss_before_mib": rss0,
            "predict_us_per_atom": 1e6 * t_second / len(c.numbers), "tile_ang": tile,
            "n_tiles": op.meta.get("n_tiles"), "cluster_atoms": op.meta.get("cluster_atoms")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", nargs="?", default=None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[23, 32, 45, 72])
    ap.add_argument("--untrained", default=None, help="config YAML: time random parameters instead of a run")
    ap.add_argument("--tile", type=float, default=None,
                    help="predict by tiles of this size [Å] with halos (bounded memory; includes compile)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print("RESULT " + json.dumps(one(args.run_dir, args.child, args.untrained, args.tile)))
        return
    rows = []
    for n in args.sizes:
        cmd = [sys.executable, __file__] + ([args.run_dir] if args.run_dir else []) + ["--child", str(n)]
        if args.untrained:
            cmd += ["--untrained", args.untrained]
        if args.tile:
            cmd += ["--tile", str(args.tile)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            print(f"n={n}: failed\n{p.stderr[-2000:]}", file=sys.stderr)
            continue
        r = json.loads(line[0][7:])
        rows.append(r)
        print(f"{r['n_atoms']:7d} atoms {r['n_blocks']:9d} blocks  graph {r['graph_s']:7.2f} s  first "
              f"{r['first_call_s']:7.2f} s  predict {r['predict_s']:7.2f} s ({r['predict_us_per_atom']:.0f} µs/atom)  "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
