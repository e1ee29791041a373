"""Crystal diffusion experiments: evaluate trained runs and write results.json + sample grids.

Usage (after training with ``difcrys train``, see README.md)::

    python experiments/diffusion/run.py csp  RUN_DIR --n-test 200 --name perov5_csp
    python experiments/diffusion/run.py gen  RUN_DIR --n-samples 200 --name perov5_gen
    python experiments/diffusion/run.py cond RUN_DIR --predictor PROPERTY_RUN --condition heat_ref=0..0.5 --n-samples 100
    python experiments/diffusion/run.py grid SAMPLES.extxyz --out grid.png

Each command merges its numbers into ``experiments/diffusion/results.json`` under ``--name``
together with the settings and the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results.json")


def _merge(name, record):
    import fcntl

    record["command"] = "python " + " ".join(sys.argv)
    record["date_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    import tempfile

    lock_path = os.path.join(tempfile.gettempdir(), "difcrys_diffusion_results.lock")
    with open(lock_path, "w") as lock:  # several evaluations may finish at the same time
        fcntl.flock(lock, fcntl.LOCK_EX)
        d = {}
        if os.path.exists(RESULTS):
            with open(RESULTS) as f:
                d = json.load(f)
        d[name] = record
        with open(RESULTS, "w") as f:
            json.dump(d, f, indent=1, default=float)


def _run_info(run_dir):
    info = {}
    p = os.path.join(run_dir, "summary.json")
    if os.path.exists(p):
        info["training"] = json.load(open(p))
    m = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(m):
        lines = [json.loads(l) for l in open(m)]
        info["training_epochs_logged"] = len(lines)
        info["training_time_s"] = sum(l["time_s"] for l in lines)
        info["final_val_loss"] = lines[-1]["val_loss"]
    import yaml

    info["config"] = yaml.safe_load(open(os.path.join(run_dir, "config.yaml")))
    return info


def render_grid(crystals, path, ncols=4, title=""):
    """Render structures (unit cell + atoms, ASE's matplotlib renderer) in a grid PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.visualize.plot import plot_atoms

    from difcrys.io import to_ase

    n = len(crystals)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3 * nrows))
    axes = np.atleast_1d(axes).ravel()
    for ax, c in zip(axes, crystals):
        plot_atoms(to_ase(c), ax, rotation="10x,20y,0z", radii=0.5)
        ax.set_title(c.formula, fontsize=9)
        ax.set_axis_off()
    for ax in axes[n:]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def latent_optimisation(a) -> dict:
    """CDVAE-style property optimisation on a CSP model: for seeded test compositions, optimise the
    initial noise (X_T, L_T) of the deterministic probability-flow sampler by Adam on a property
    objective of a differentiable property model, decoding along the way; the decoded structures
    are validated and re-scored with the property model on the host."""
    import jax

    from difcrys.cli_diffusion import _sampler_cfg, _test_set
    from difcrys.diffusion import guidance as gd
    from difcrys.diffusion import model as dm
    from difcrys.diffusion.model import parse_condition
    from difcrys.train.diffusion import load_run
    from difcrys.train.property import load_predictor

    spec, net, params, cfg = load_run(a.path)
    if spec.task != "csp":
        raise SystemExit("latent mode needs a CSP model (composition given)")
    refs = _test_set(cfg, a.n_samples)[0]
    refs = [c for c in refs if c.n_atoms <= spec.n_max and all(int(z) in spec.elements for z in
                                                                np.asarray(c.numbers)[np.asarray(c.mask)])]
    prop, kind, lo, hi = parse_condition(a.condition)
    pr = load_predictor(a.predictor)
    obj = gd.Objective(prop, kind, lo, hi, scale=pr.std)
    J = gd.guidance_fn([(gd.predictor_fn(pr, spec.elements, spec.n_max), obj)])
    b = dm.prepare_batch(spec, refs)
    scfg = _sampler_cfg(cfg, n_steps=a.steps or 100)
    t0 = time.time()
    out = gd.optimise_latent(spec, net, params, scfg, b["types"], b["n"], J, steps=a.latent_steps, lr=a.latent_lr,
                             decode_every=max(a.latent_steps // 3, 1), key=jax.random.PRNGKey(0), progress=True)
    rows = []
    for step, st in out["decoded"]:
        crystals, _ = dm.to_crystals(spec, st)
        good = [c for c in crystals if c is not None]
        y = pr(good) if good else np.array([])
        hit = gd.satisfied(y, obj) if good else np.array([])
        rows.append({"step": step, "n_valid": len(good), "pred_mean": float(np.mean(y)) if good else None,
                     "pred_std": float(np.std(y)) if good else None,
                     "hit_rate_of_all": float(hit.sum() / len(refs)), "objective": out["history"][step]})
    return {"mode": "latent", "condition": a.condition, "predictor": a.predictor, "n_structures": len(refs),
            "n_steps": scfg.n_steps, "latent_steps": a.latent_steps, "latent_lr": a.latent_lr,
            "objective_history": out["history"], "decoded": rows, "wall_time_s": time.time() - t0}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["csp", "gen", "cond", "grid", "latent"])
    p.add_argument("path")
    p.add_argument("--name", default=None)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--n-samples", type=int, default=200)
    p.add_argument("--predictor", default=None)
    p.add_argument("--condition", default=None)
    p.add_argument("--guide-weight", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--cfg-scale", type=float, default=None,
                   help="cond mode: also sample with classifier-free guidance of this weight (model trained "
                        "with the condition, e.g. an adapter fine-tune)")
    p.add_argument("--samplings", nargs="+", default=["unguided", "guided"],
                   choices=["unguided", "guided", "cfg"],
                   help="cond mode: which samplings to compare (guided: gradient guidance by --predictor)")
    p.add_argument("--out", default=None)
    p.add_argument("--latent-steps", type=int, default=30, help="latent mode: Adam steps on the initial noise")
    p.add_argument("--latent-lr", type=float, default=0.05)
    a = p.parse_args(argv)
    from difcrys.cli_diffusion import evaluate_run, generate

    if a.mode == "grid":
        from difcrys import io

        render_grid(io.read_many(a.path)[:12], a.out or os.path.join(HERE, "grid.png"))
        return 0
    name = a.name or os.path.basename(os.path.normpath(a.path)) + "_" + a.mode
    if a.mode == "latent":
        res = latent_optimisation(a)
        res.update(_run_info(a.path))
        _merge(name, res)
        print(json.dumps({k: v for k, v in res.items() if k != "config"}, indent=1, default=float))
        return 0
    if a.mode == "csp":
        res = evaluate_run(a.path, "csp", a.n_test, steps=a.steps)
    elif a.mode == "gen":
        res = evaluate_run(a.path, "gen", a.n_samples)
        g = generate(a.path, 12, seed=123, progress=False)
        good = [c for c in g["crystals"] if c is not None]
        if good:
            render_grid(good, os.path.join(HERE, f"{name}_grid.png"), title=f"{name}: de novo samples")
            res["grid"] = f"{name}_grid.png"
    else:
        from difcrys.diffusion import guidance as gd
        from difcrys.diffusion.model import parse_condition
        from difcrys.train.property import load_predictor

        prop, kind, lo, hi = parse_condition(a.condition)
        pr = load_predictor(a.predictor)
        obj = gd.Objective(prop, kind, lo, hi)
        res = {"condition": a.condition, "predictor": a.predictor}
        grad_kw = {"conditions": [a.condition], "predictors": [f"{prop}={a.predictor}"], "guide_weight": a.guide_weight}
        cfg_kw = {"conditions": [a.condition], "guidance_scale": a.cfg_scale}
        if "cfg" in a.samplings and a.cfg_scale is None:
            p.error("--samplings cfg needs --cfg-scale")
        plans = {"unguided": {}, "guided": grad_kw, "cfg": cfg_kw}
        for label, kw in ((s, plans[s]) for s in a.samplings):
            t0 = time.time()
            g = generate(a.path, a.n_samples, seed=7, steps=a.steps, progress=False, **kw)
            good = [c for c in g["crystals"] if c is not None]
            y = pr(good) if good else np.array([])
            hit = gd.satisfied(y, obj, tol=0.05 if kind == "value" else 0.0)
            res[label] = {"n_samples": a.n_samples, "n_valid": len(good), "hit_rate_of_valid": float(hit.mean()) if good else 0.0,
                          "hit_rate_of_all": float(hit.sum() / a.n_samples), "pred_mean": float(np.mean(y)) if good else None,
                          "pred_std": float(np.std(y)) if good else None, "wall_time_s": time.time() - t0}
            if label != "unguided" and good:
                render_grid(good[:8], os.path.join(HERE, f"{name}_{label}_grid.png"),
                            title=f"{name} ({label}): {a.condition}")
                res[label]["grid"] = f"{name}_{label}_grid.png"
        res["guide_weight"] = a.guide_weight
        res["cfg_scale"] = a.cfg_scale
        res["n_steps"] = g["n_steps"]
    res.update(_run_info(a.path))
    _merge(name, res)
    print(json.dumps({k: v for k, v in res.items() if k != "config"}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
