"""MD throughput of the equivariant potential on diamond-Si supercells (64 atoms upwards).

Prints, per system size: MD steps/s and atom-steps/s by wall time, the same per CPU second of this
process (``time.process_time``, all threads: robust on a shared, overloaded machine, where wall
times mostly measure the other jobs), and peak memory (host RSS, or device memory where the
backend reports it). Atom-steps per second is flat when the cost is linear in N; the script also
prints the exponent ``b`` of a least-squares fit ``time/step ∝ N^b`` over the measured sizes. Weights do not affect
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
import time

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
    print(f"{'atoms':>8} {'steps/s':>10} {'atom-steps/s':>14} {'steps/CPU-s':>12} {'atom-steps/CPU-s':>16} "
          f"{'peak MB':>9}")
    for n in args.sizes:
        k = max(1, round((n / 8) ** (1 / 3)))
        c = supercell(conv, k * np.eye(3, dtype=int))
        na = c.n_atoms
        try:
            # two chunks of `steps`: the first compiles, the second is timed (includes the
            # in-loop neighbour-list rebuilds, excludes host logging)
            cpu = []
            r = run_md(pot, params, c, ensemble="nve", temperature=300, steps=2 * args.steps, dt=1.0,
                       log_every=args.steps, callback=lambda step, frame: cpu.append(time.process_time()) and False)
            el = float(r.chunk_seconds[-1])
            el_cpu = cpu[1] - cpu[0]  # chunk 2 (+ one logged energy/forces/stress evaluation)
        except Exception as e:  # noqa: BLE001 - out of memory ends the scan
            print(f"{na:8d}  failed: {type(e).__name__}: {str(e)[:120]}")
            break
        mem, kind = _peak_memory_mb()
        sps = args.steps / el
        spc = args.steps / el_cpu
        rows.append({"atoms": na, "steps_per_s": sps, "atom_steps_per_s": sps * na, "steps_per_cpu_s": spc,
                     "atom_steps_per_cpu_s": spc * na, "peak_mb": mem, "memory": kind})
        print(f"{na:8d} {sps:10.3f} {sps * na:14.1f} {spc:12.3f} {spc * na:16.1f} {mem:9.0f}", flush=True)
        _dump(args, argv, rows, {})  # after every size: a long scan keeps what it measured
    scaling = {}
    if len(rows) >= 2:
        n_ = np.log([r["atoms"] for r in rows])
        for key in ("steps_per_s", "steps_per_cpu_s"):
            scaling[key] = float(-np.polyfit(n_, np.log([r[key] for r in rows]), 1)[0])
        print(f"time/step ∝ N^b: b = {scaling['steps_per_s']:.2f} (wall), {scaling['steps_per_cpu_s']:.2f} (CPU)")
    _dump(args, argv, rows, scaling)
    return 0


def _dump(args, argv, rows, scaling):
    import jax

    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"backend": jax.default_backend(), "command": "python benchmarks/md_throughput.py "
                       + " ".join(sys.argv[1:] if argv is None else argv), "load_average": os.getloadavg(),
                       "rows": rows, "scaling_exponent": scaling}, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
