"""MD throughput of the equivariant potential on diamond-Si supercells (64 atoms upwards).

Prints, per system size: MD steps/s, atom-steps/s (which is flat when the cost is linear in N),
and peak memory (host RSS, or device memory where the backend reports it). Weights do not affect
speed: pass ``--run-dir`` for a trained model, otherwise the architecture of
``configs/mlearn_Si.yaml`` is used with random weights.

Usage::

    python benchmarks/md_throughput.py --sizes 64 216 512 1728 --steps 50
    python benchmarks/md_throughput.py --sizes 64 ... 100000 --steps 20 --json out.json   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys

import numpy as np


def _peak_memory_mb():
    import jax

    d = jax.devices()[0]
    try:
        stats = d.memory_stats()
        if stats and "peak_bytes_in_use" in stats:
            return stats["peak_bytes_in_use"] / 2 ** 20, "device"
    except Exception:  # noqa: BLE001 - CPU backends have no memory_stats
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "host RSS"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 216, 512, 1000])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import jax

    from difcrys import io
    from difcrys.crystal import supercell
    from difcrys.md.dynamics import run_md
    from difcrys.nn.potential import Potential, PotentialConfig

    if args.run_dir:
        from difcrys.train.potential import load_run

        pot, params = load_run(args.run_dir)
    else:
        import yaml

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(root, "configs", "mlearn_Si.yaml")) as fh:
            mcfg = yaml.safe_load(fh)["model"]
        pot = Potential(PotentialConfig.from_dict({**mcfg, "avg_num_neighbors": 28.0, "shift": [-5.4], "scale": 0.5}))
        params = pot.init(jax.random.PRNGKey(0))
    conv = supercell(io.example("Si"), np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]]))  # 8 atoms
    rows = []
    print(f"backend {jax.default_backend()}, model {pot.config.num_layers} layers x {pot.config.channels} channels, "
          f"l_max {pot.config.l_max}, cutoff {pot.config.cutoff} Å")
    print(f"{'atoms':>8} {'steps/s':>10} {'atom-steps/s':>14} {'peak MB':>9}")
    for n in args.sizes:
        k = max(1, round((n / 8) ** (1 / 3)))
        c = supercell(conv, k * np.eye(3, dtype=int))
        na = c.n_atoms
        try:
            # two chunks of `steps`: the first compiles, the second is timed (includes the
            # in-loop neighbour-list rebuilds, excludes host logging)
            r = run_md(pot, params, c, ensemble="nve", temperature=300, steps=2 * args.steps, dt=1.0,
                       log_every=args.steps)
            el = float(r.chunk_seconds[-1])
        except Exception as e:  # noqa: BLE001 - out of memory ends the scan
            print(f"{na:8d}  failed: {type(e).__name__}: {str(e)[:120]}")
            break
        mem, kind = _peak_memory_mb()
        sps = args.steps / el
        rows.append({"atoms": na, "steps_per_s": sps, "atom_steps_per_s": sps * na, "peak_mb": mem, "memory": kind})
        print(f"{na:8d} {sps:10.2f} {sps * na:14.1f} {mem:9.0f}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"backend": jax.default_backend(), "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
