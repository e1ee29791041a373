"""CLI of the crystal diffusion models: ``difcrys sample`` and the diffusion branch of ``difcrys evaluate``.

Examples::

    difcrys train configs/diffusion_perov5.yaml --run-dir runs/perov5_csp
    difcrys sample runs/perov5_csp --n 10 --composition Ba1Ti1O3 --out samples.cif
    difcrys sample runs/perov5_gen --n 100 --condition heat_ref=0.5..1.0 --predictor heat_ref=RUN --out s.extxyz
    difcrys evaluate runs/perov5_csp --task csp --n-samples 200

Conditions (``--condition``, repeatable): ``NAME=VALUE``, ``NAME=LO..HI``, ``NAME>VALUE``, ``NAME<VALUE``.
A condition on a property the model was trained with (``data.condition``) uses classifier-free
guidance (``--guidance-scale``; a range conditions on its midpoint, an inequality on the bound moved
half a standard deviation inside); a condition on a property with a ``--predictor NAME=PROPERTY_RUN``
uses gradient guidance by that differentiable property model (``--guide-weight``). Several
conditions combine. Every generated structure is validated (:meth:`difcrys.crystal.Crystal.validate`);
invalid ones are counted and reported (and listed in ``OUT.invalid.json``), never silently dropped.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from difcrys.errors import ConfigError

__all__ = ["register", "cmd_sample", "cmd_evaluate", "generate"]


def _sampler_cfg(cfg: dict, **over):
    from difcrys.diffusion.model import SamplerConfig
    from difcrys.train.config import dataclass_from_dict

    d = dict(cfg.get("sample") or {})
    d.update({k: v for k, v in over.items() if v is not None})
    return dataclass_from_dict(SamplerConfig, d, "sample")


def _build_conditions(spec, conditions, predictors, n_max, guide_weight):
    """Split conditions into a CFG vector and gradient-guidance objectives (with input checks)."""
    from difcrys.diffusion import guidance as gd
    from difcrys.diffusion.model import parse_condition

    preds = {}
    for p in predictors or []:
        if "=" not in p:
            raise ConfigError(f"--predictor takes NAME=PROPERTY_RUN_DIR, got {p!r}")
        name, run = p.split("=", 1)
        from difcrys.train.property import load_predictor

        preds[name] = load_predictor(run)
    cond_vec = None
    objs = []
    for text in conditions or []:
        name, kind, lo, hi = parse_condition(text)
        if name in spec.cond_names:
            i = spec.cond_names.index(name)
            obj = gd.Objective(name, kind, lo, hi)
            gd.check_target(obj, spec.cond_min[i], spec.cond_max[i], "of this model")
            sd = spec.cond_std[i]
            y = {"value": lo, "range": 0.5 * (lo + hi), "ge": lo + 0.5 * sd, "le": hi - 0.5 * sd}[kind]
            if cond_vec is None:
                cond_vec = np.asarray(spec.cond_mean, float).copy()
            cond_vec[i] = y
        elif name in preds:
            pr = preds[name]
            obj = gd.Objective(name, kind, lo, hi, scale=pr.std, weight=1.0)
            gd.check_target(obj, pr.mean - 3 * pr.std, pr.mean + 3 * pr.std, "of the property model (mean ± 3σ)")
            objs.append((gd.predictor_fn(pr, spec.elements, n_max), obj))
        else:
            raise ConfigError(f"cannot condition on {name!r}: the model was trained with conditions "
                              f"{list(spec.cond_names) or 'none'}; give --predictor {name}=PROPERTY_RUN for gradient guidance")
    guidance = None
    if objs:
        J = gd.guidance_fn(objs)
        guidance = (J, float(guide_weight), float(guide_weight))
    return cond_vec, guidance, objs


def generate(run_dir, n: int, *, composition: str | None = None, conditions=None, predictors=None,
             guidance_scale: float | None = None, guide_weight: float = 1.0, steps: int | None = None,
             batch_size: int | None = None, seed: int = 0, compositions=None, progress: bool = True,
             which: str = "best") -> dict:
    """Generate ``n`` structures with a trained run (the work of ``difcrys sample``).

    Args:
        composition: e.g. ``"Ba1Ti1O3"`` (required for CSP models; optional for de novo models).
        compositions: alternatively a list of ``n`` atomic-number lists (one per structure; evaluation).
        conditions, predictors: see the module docstring.

    Returns:
        ``{"crystals": [Crystal | None], "reasons": [str], "objectives": list, "spec": spec, ...}``.

    Raises:
        ElementError: an element never seen in training. ConfigError: atom count beyond the trained
        maximum, missing composition for a CSP model, impossible property target.
    """
    import jax

    from difcrys.diffusion import model as dm
    from difcrys.train.diffusion import load_run

    if int(n) < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    spec, net, params, cfg = load_run(run_dir, which)
    if compositions is None and composition is not None:
        compositions = [dm.parse_composition(composition)] * int(n)
    if compositions is None and spec.task == "csp":
        raise ConfigError(f"{run_dir} is a crystal-structure-prediction model: give --composition (e.g. Ba1Ti1O3)")
    rng = np.random.default_rng(seed)
    if compositions is not None:
        ns = np.array([len(c) for c in compositions])
        for k in set(ns.tolist()):
            spec.check_n(k)
        types = np.full((n, spec.n_max), spec.K, np.int32)
        for b, comp in enumerate(compositions):
            types[b, :len(comp)] = spec.class_of(comp)
    else:
        ns = rng.choice(np.arange(1, spec.n_max + 1), size=n, p=np.asarray(spec.n_probs))
        types = None
    cond_vec, guidance, objs = _build_conditions(spec, conditions, predictors, spec.n_max, guide_weight)
    if cond_vec is not None and spec.n_cond == 0:
        raise ConfigError("this model was trained without conditions")
    scfg = _sampler_cfg(cfg, n_steps=steps, guidance_scale=guidance_scale)
    init, step, grid = dm.make_sampler(spec, net, params, scfg, guidance=guidance)
    B = min(int(batch_size or (cfg.get("eval") or {}).get("batch_size", 100)), int(n))
    crystals, reasons = [], []
    t0 = time.time()
    for start in range(0, n, B):
        sl = slice(start, min(start + B, n))
        m = sl.stop - sl.start
        nb = np.resize(ns[sl], B)  # fixed batch shape: one compilation
        tb = None if types is None else np.resize(types[sl], (B, spec.n_max))
        cb = None if cond_vec is None else np.broadcast_to(cond_vec, (B, len(cond_vec)))
        st = dm.run_sampler(init, step, grid, jax.random.PRNGKey(seed * 7919 + start), nb, tb, cb,
                            progress=progress, desc=f"sampling {sl.start}-{sl.stop} of {n}")
        cs, why = dm.to_crystals(spec, st)
        crystals += cs[:m]
        reasons += why[:m]
    return {"crystals": crystals, "reasons": reasons, "objectives": objs, "spec": spec,
            "n_steps": int(len(grid) - 1), "wall_time_s": time.time() - t0, "config": cfg}


def cmd_sample(args) -> int:
    from difcrys import io

    res = generate(args.run_dir, args.n, composition=args.composition, conditions=args.condition,
                   predictors=args.predictor, guidance_scale=args.guidance_scale, guide_weight=args.guide_weight,
                   steps=args.steps, batch_size=args.batch_size, seed=args.seed, progress=not args.quiet)
    good = [c for c in res["crystals"] if c is not None]
    bad = [(i, r) for i, (c, r) in enumerate(zip(res["crystals"], res["reasons"])) if c is None]
    info = {"n_requested": args.n, "n_valid": len(good), "n_invalid": len(bad), "out": args.out,
            "n_steps": res["n_steps"], "wall_time_s": res["wall_time_s"]}
    if res["objectives"]:
        info["guidance"] = [dict(name=o.name, kind=o.kind, lo=o.lo, hi=o.hi) for _, o in res["objectives"]]
    if good:
        io.write(args.out, good)
    if bad:
        with open(args.out + ".invalid.json", "w") as f:
            json.dump([{"index": i, "reason": r} for i, r in bad], f, indent=1)
    if args.json:
        print(json.dumps(info))
    else:
        print(f"{len(good)} of {args.n} structures valid, written to {args.out}"
              + (f"; {len(bad)} failed validation (reasons in {args.out}.invalid.json)" if bad else ""))
    return 0 if good else 1


def _test_set(cfg, n_samples, seed=0):
    from difcrys.train.diffusion import _configs, load_data

    data = _configs(cfg)[0]
    crystals, props = load_data(data, "test")
    idx = np.arange(len(crystals))
    if n_samples and n_samples < len(crystals):
        idx = np.sort(np.random.default_rng(seed).choice(len(crystals), n_samples, replace=False))
    return [crystals[i] for i in idx], {k: v[idx] for k, v in props.items()}, idx, data


def evaluate_run(run_dir, task: str, n_samples: int | None = None, which: str = "best", progress: bool = True,
                 with_coverage: bool = True, steps: int | None = None) -> dict:
    """CSP (match rate, RMSE at 1 sample on a seeded subset of the test part) or de novo metrics."""
    from difcrys.train.diffusion import load_run

    spec, _, _, cfg = load_run(run_dir, which)
    ev = cfg.get("eval") or {}
    n_samples = int(n_samples or ev.get("n_samples", 100))
    refs, props, idx, data = _test_set(cfg, n_samples)
    t0 = time.time()
    if task == "csp":
        from difcrys.diffusion.metrics import csp_match

        # structures with elements/atom counts outside the training vocabulary cannot be predicted:
        # they count as misses (reported separately)
        comps, skipped = [], 0
        for c in refs:
            z = [int(x) for x, m in zip(np.asarray(c.numbers), np.asarray(c.mask)) if m]
            if len(z) > spec.n_max or any(zz not in spec.elements for zz in z):
                skipped += 1
                z = None
            comps.append(z)
        ok = [i for i, z in enumerate(comps) if z is not None]
        res = generate(run_dir, len(ok), compositions=[comps[i] for i in ok], progress=progress, which=which,
                       steps=steps)
        preds = [None] * len(refs)
        for j, i in enumerate(ok):
            preds[i] = res["crystals"][j]
        m = csp_match(preds, refs)
        out = {"task": "csp", "dataset": data.set, "test_part": data.test_part, "n_test": len(refs),
               "n_unpredictable": skipped, "match_rate": m["match_rate"], "rmse": m["rmse"],
               "n_matched": m["n_matched"], "n_failed_validation": sum(c is None for c in res["crystals"]),
               "n_steps": res["n_steps"]}
    elif task == "gen":
        from difcrys.diffusion.metrics import summary_gen
        from difcrys.train.diffusion import load_data

        res = generate(run_dir, n_samples, progress=progress, which=which, steps=steps)
        n_ref = int(ev.get("n_reference", 500))
        if n_ref != len(refs):
            refs = _test_set(cfg, n_ref, seed=2)[0]
        train, _ = load_data(data, "train")
        sub = np.random.default_rng(1).choice(len(train), min(len(train), 2000), replace=False)
        m = summary_gen(res["crystals"], refs, [train[i] for i in sub], dataset=data.set, with_coverage=with_coverage)
        out = {"task": "gen", "dataset": data.set, "n_reference": len(refs), "n_steps": res["n_steps"], **m,
               "novelty_reference": f"{len(sub)} random training structures"}
    else:
        raise ConfigError(f"--task must be csp or gen, got {task!r}")
    out["wall_time_s"] = time.time() - t0
    out["run_dir"] = str(run_dir)
    return out


def cmd_evaluate(args) -> int:
    task = getattr(args, "task", None)
    if task not in ("csp", "gen"):
        raise ConfigError("difcrys evaluate RUN_DIR --task csp|gen (a diffusion run needs --task)")
    out = evaluate_run(args.run_dir, task, getattr(args, "n_samples", None), getattr(args, "which", "best") or "best",
                       progress=not getattr(args, "json", False))
    if getattr(args, "out", None):
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    if getattr(args, "json", False):
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:24s} {v}")
    return 0


def register(subparsers) -> None:
    """Add ``sample`` to the ``difcrys`` parser (``train``/``evaluate`` dispatch here by the run's task)."""
    p = subparsers.add_parser("sample", help="generate structures with a trained diffusion model")
    p.add_argument("run_dir")
    p.add_argument("--n", type=int, default=10, help="number of structures")
    p.add_argument("--composition", default=None, help="e.g. Ba1Ti1O3 (required for CSP models)")
    p.add_argument("--condition", action="append", default=None,
                   help="NAME=VALUE, NAME=LO..HI, NAME>VALUE or NAME<VALUE (repeatable)")
    p.add_argument("--predictor", action="append", default=None,
                   help="NAME=PROPERTY_RUN_DIR: differentiable property model for gradient guidance (repeatable)")
    p.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance weight w")
    p.add_argument("--guide-weight", type=float, default=1.0,
                   help="gradient-guidance weight (1: the objective read as -log p(y|M), Bayes' rule)")
    p.add_argument("--steps", type=int, default=None, help="reverse diffusion steps (default: the config's)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output file (.cif or .extxyz)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sample)
