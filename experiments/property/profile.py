"""Per-step cost of the property models on perov_5 batches (CPU), to size the training budget.

Usage (from the repository root)::

    nice python experiments/property/profile.py [--steps 8] [--batch 64]

Times one jitted training step (forward + backward + AdamW update, L1 loss) after compilation,
for CGCNN and several configurations of the equivariant head, on the same batch of ``--batch``
perov_5 structures (``train_subset_dev``). Prints the median step time, the implied epoch time
for the 4,330 fitted structures, the parameter count, and writes ``results/profile.json``.
Timings depend on the machine load (shared 2-core machine): compare the rows, not absolute values.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent

CONFIGS = [
    ("cgcnn", {}),
    ("equivariant", {"n_scalars": 64, "n_vectors": 8, "lmax": 2, "n_layers": 3}),  # the 60-min run
    ("equivariant", {"n_scalars": 64, "n_vectors": 8, "lmax": 1, "n_layers": 3}),
    ("equivariant", {"n_scalars": 64, "n_vectors": 16, "lmax": 1, "n_layers": 3}),
    ("equivariant", {"n_scalars": 32, "n_vectors": 8, "lmax": 2, "n_layers": 3}),
    ("equivariant", {"n_scalars": 64, "n_vectors": 8, "lmax": 2, "n_layers": 2}),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    import jax
    import jax.numpy as jnp
    import optax

    from difcrys.data import load_shared
    from difcrys.nn.cgcnn import featurize
    from difcrys.train.property import build_model

    ds = load_shared("perov_5", "train_subset_dev")
    gd = featurize(ds.crystals[: a.batch])
    c, g = gd.take(np.arange(a.batch))
    y = jnp.asarray(np.random.default_rng(0).standard_normal(a.batch), jnp.float32)
    rows = []
    for name, kw in CONFIGS:
        model = build_model(name, kw)
        v = model.init(jax.random.PRNGKey(0), c, g)
        tx = optax.adamw(1e-3)
        opt = tx.init(v["params"])

        def loss(p, s):
            pred, ns = model.apply({"params": p, "state": s}, c, g, train=True)
            return jnp.mean(jnp.abs(pred.astype(jnp.float32) - y)), ns

        @jax.jit
        def step(v, opt):
            (l, ns), gr = jax.value_and_grad(loss, has_aux=True)(v["params"], v["state"])
            up, opt = tx.update(gr, opt, v["params"])
            return {"params": optax.apply_updates(v["params"], up), "state": ns}, opt, l

        t0 = time.perf_counter()
        v, opt, l = step(v, opt)
        jax.block_until_ready(l)
        t_compile = time.perf_counter() - t0
        ts = []
        for _ in range(a.steps):
            t0 = time.perf_counter()
            v, opt, l = step(v, opt)
            jax.block_until_ready(l)
            ts.append(time.perf_counter() - t0)
        med = float(np.median(ts))
        n_par = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(v["params"])))
        r = {"model": name, "kwargs": kw, "step_s": med, "epoch_s_4330": med * (4330 // a.batch),
             "compile_s": t_compile, "n_params": n_par, "batch": a.batch}
        rows.append(r)
        print(json.dumps(r), flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    out = {"rows": rows, "command": f"python experiments/property/profile.py --steps {a.steps} --batch {a.batch}",
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "note": "measured while another training job shared the 2 CPU cores; compare rows, not absolutes"}
    (HERE / "results" / "profile.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
