"""Where the Hamiltonian-network errors come from: fitted baselines and the H / S split of band errors.

Two measurements behind the session-5 changes (README, "Session 5"):

``fit``  — fit the least-squares two-centre baseline (edges, H and S) and the crystal-field
on-site baseline (:func:`difcrys.train.hamiltonian.fit_two_centre`) on a training set and report,
with the network switched off (all weights zero), the block errors on a test set: overall, the
on-site blocks alone and the overlap::

    python experiments/deeph/baselines.py fit --train "experiments/deeph/data/graphene_00*.npz" \\
        "experiments/deeph/data/graphene_0[2-9]*.npz" "experiments/deeph/data/bilayer_*.npz" \\
        --test "experiments/deeph/data/graphene_01*.npz" --cutoff 6
    python experiments/deeph/baselines.py fit --si64 --cutoff 7

``--bond-env 6`` adds the fitted bond crystal field (``model.bond_env_k``, reach ``--reach``).

``split`` — for a trained run, the band errors near E_F of (predicted H, exact S), (exact H,
predicted S) and (both predicted), against the reference truncated at the model cutoff::

    python experiments/deeph/baselines.py split runs/deeph_si64_large --si64

``onsite`` — how the DFT on-site s–s element varies (standard deviation over atoms, correlation
with the atom's mean nearest-neighbour bond length) and, for a run, its on-site block MAE::

    python experiments/deeph/baselines.py onsite --run runs/deeph_graphene --test "experiments/deeph/data/graphene_00*.npz"

``shift`` — per structure, the band MAE near E_F against the stored DFT eigenvalues, before and
after removing the mean (rigid) offset::

    python experiments/deeph/baselines.py shift runs/deeph_graphene_2c --test "experiments/deeph/data/graphene_01*.npz"
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np


def _ops(args, which):
    from difcrys.train.hamiltonian import load_operators

    if args.si64:
        return load_operators({"deeptb": "shared:deeptb_si64_hamiltonian", "p_order": "yzx", "n_electrons": 256})
    return load_operators({"glob": getattr(args, which)})


def _onsite_errors(model, params, ops):
    out = []
    for op in ops:
        pred = model.predict_operator(params, op.crystal)
        key = {(int(i), int(j), tuple(int(x) for x in R)): q for q, ((i, j), R) in enumerate(zip(pred.pairs, pred.shifts))}
        pairs = [(q, key[(int(i), int(i), (0, 0, 0))]) for q, ((i, j), R) in enumerate(zip(op.pairs, op.shifts))
                 if i == j and not np.any(R)]
        err = np.array([np.abs(pred.H[b] - op.H[a]) for a, b in pairs])
        out.append(1000.0 * float(err.mean()))
    return out


def _shell_errors(model, params, ops, shells=((0.0, 0.01), (0.01, 1.8), (1.8, 2.8), (2.8, 3.2), (3.2, 4.5), (4.5, 6.1))):
    """H block MAE [meV] by bond length (all entries, and the p_z–p_z entry: orbital 3 of C s, p)."""
    from difcrys.train.hamiltonian import truncate

    acc = {}
    for op in ops:
        pred = model.predict_operator(params, op.crystal)
        ref = truncate(op, model.config.cutoff)
        key = {(int(i), int(j), tuple(int(x) for x in R)): p for p, ((i, j), R) in enumerate(zip(pred.pairs, pred.shifts))}
        idx = np.array([key[(int(i), int(j), tuple(int(x) for x in R))] for (i, j), R in zip(ref.pairs, ref.shifts)])
        err = np.abs(pred.H[idx] - ref.H)
        d = np.linalg.norm(ref.bond_vectors(), axis=1)
        for a, b in shells:
            m = (d >= a) & (d < b)
            if m.any():
                acc.setdefault(f"[{a},{b}) all", []).append(1000 * err[m].mean())
                if err.shape[1] > 3:
                    acc.setdefault(f"[{a},{b}) pz-pz", []).append(1000 * err[m][:, 3, 3].mean())
    return {k: round(float(np.mean(v)), 1) for k, v in acc.items()}


def cmd_fit(args):
    import jax

    from difcrys.nn.hamiltonian import HamiltonianConfig, HamiltonianModel
    from difcrys.train.hamiltonian import block_errors, fit_statistics

    train = _ops(args, "train")
    test = train if args.si64 else _ops(args, "test")
    basis = {"Si": "1s1p"} if args.si64 else {"C": [0, 1]}
    env = dict(bond_env_k=args.bond_env, bond_env_kb=args.bond_env_kb, three_body_cutoff=args.reach,
               three_body_max=64) if args.bond_env else {}
    cfg = fit_statistics(HamiltonianConfig(basis=basis, cutoff=args.cutoff, two_centre_k=args.k, num_layers=0,
                                           channels=2, dtype="float64", **env), train)
    model = HamiltonianModel(cfg)
    params = jax.tree_util.tree_map(lambda x: 0.0 * x, model.init(jax.random.PRNGKey(0)))
    be = block_errors(model, params, test)
    res = {"n_train": len(train), "n_test": len(test), "edge_residual_rms_meV": 1000 * cfg.scale,
           "onsite_residual_rms_meV": 1000 * cfg.onsite_scale, "block_mae_H_meV": be["mae_H_meV"],
           "block_max_H_meV": be["max_H_meV"], "mae_S": be["mae_S"],
           "onsite_mae_meV_per_structure": _onsite_errors(model, params, test),
           "by_distance": _shell_errors(model, params, test)}
    print(json.dumps(res, indent=1))


def cmd_split(args):
    from difcrys.tb.solve import eigenvalues, fermi_level
    from difcrys.train.hamiltonian import load_run, truncate

    model, params = load_run(args.run_dir)
    ref = _ops(args, "test")[0]
    nel = float(ref.meta["n_electrons"])
    pred = model.predict_operator(params, ref.crystal)
    ref_t = truncate(ref, model.config.cutoff)
    key = {(int(i), int(j), tuple(int(x) for x in R)): p for p, ((i, j), R) in enumerate(zip(pred.pairs, pred.shifts))}
    idx = np.array([key[(int(i), int(j), tuple(int(x) for x in R))] for (i, j), R in zip(ref_t.pairs, ref_t.shifts)])
    Hp, Sp = pred.H[idx], pred.S[idx]
    kp = np.zeros((1, 3)) if args.si64 else np.asarray(ref.meta["kpts_mesh"])
    e0 = eigenvalues(ref_t, kp)
    mu = fermi_level(e0, nel)
    win = np.abs(e0 - mu) < args.window
    res = {"fermi_level_ev": mu, "n_eigenvalues": int(win.sum()),
           "block_mae_H_meV": 1000 * float(np.abs(Hp - ref_t.H).mean()), "block_mae_S": float(np.abs(Sp - ref_t.S).mean())}
    for name, (H, S) in {"pred_H_exact_S": (Hp, ref_t.S), "exact_H_pred_S": (ref_t.H, Sp), "both_pred": (Hp, Sp)}.items():
        d = np.abs(eigenvalues(dataclasses.replace(ref_t, H=H, S=S), kp) - e0)[win]
        res[name] = {"band_mae_meV": 1000 * float(d.mean()), "band_max_meV": 1000 * float(d.max())}
    print(json.dumps(res, indent=1))


def cmd_shift(args):
    from difcrys.tb.solve import eigenvalues, fermi_level
    from difcrys.train.hamiltonian import load_run

    model, params = load_run(args.run_dir)
    rows = []
    for op in _ops(args, "test"):
        pred = model.predict_operator(params, op.crystal)
        mu = float(op.meta.get("mu_ev", np.nan))
        if not np.isfinite(mu):
            mu = fermi_level(np.asarray(op.meta["eig_mesh"]), float(op.meta["n_electrons"]))
        row = {"file": str(op.meta.get("file"))}
        for kind in ("mesh", "extra"):
            kp, er = np.asarray(op.meta[f"kpts_{kind}"]), np.asarray(op.meta[f"eig_{kind}"])
            e = eigenvalues(pred, kp)
            nb = min(e.shape[1], er.shape[1])
            w = np.abs(er[:, :nb] - mu) < args.window
            d = (e[:, :nb] - er[:, :nb])[w]
            row[kind] = {"n": int(d.size), "mae_meV": 1000 * float(np.abs(d).mean()), "mean_offset_meV": 1000 * float(d.mean()),
                         "mae_after_offset_meV": 1000 * float(np.abs(d - d.mean()).mean())}
        rows.append(row)
    print(json.dumps(rows, indent=1))


def cmd_onsite(args):
    ops = _ops(args, "test")
    ss, dnn = [], []
    for op in ops:
        d = op.bond_vectors()
        r = np.linalg.norm(d, axis=1)
        for p in np.nonzero(r < 1e-6)[0]:
            i = op.pairs[p, 0]
            nb = (op.pairs[:, 0] == i) & (r > 0.1)
            near = np.sort(r[nb])[:3]  # the three nearest neighbours (sp2 carbon)
            ss.append(op.H[p][0, 0])
            dnn.append(near.mean())
    res = {"n_atoms": len(ss), "onsite_ss_std_eV": float(np.std(ss)),
           "corr_onsite_ss_vs_mean_nn_bond": float(np.corrcoef(ss, dnn)[0, 1])}
    if args.run:
        from difcrys.train.hamiltonian import load_run

        model, params = load_run(args.run)
        res["run"] = args.run
        res["onsite_mae_meV_per_structure"] = _onsite_errors(model, params, ops)
    print(json.dumps(res, indent=1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    specs = {  # name: (function, positional run folder, help)
        "fit": (cmd_fit, False, "fit the baselines on --train, block errors on --test (network off)"),
        "split": (cmd_split, True, "band errors of a run from its H and its S separately"),
        "onsite": (cmd_onsite, False, "on-site s-s variation of --test and a run's (--run) on-site MAE"),
        "shift": (cmd_shift, True, "per-structure band MAE before and after removing a rigid offset"),
    }
    for name, (func, has_run, text) in specs.items():
        p = sub.add_parser(name, help=text)
        if has_run:
            p.add_argument("run_dir", help="a Hamiltonian run folder")
        p.add_argument("--test", nargs="+", default=[], help="test structures (.npz globs)")
        p.add_argument("--si64", action="store_true", help="use the ABACUS Si64 Hamiltonian instead")
        p.set_defaults(func=func)
        if name in ("split", "shift"):
            p.add_argument("--window", type=float, default=2.0, help="|E - E_F| window [eV]")
        if name == "fit":
            p.add_argument("--train", nargs="+", default=[], help="training structures (.npz globs)")
            p.add_argument("--cutoff", type=float, default=6.0, help="model cutoff [Å]")
            p.add_argument("--k", type=int, default=40, help="radial Gaussians")
            p.add_argument("--bond-env", type=int, default=0, help="bond crystal field: functions of r_ik (0: off)")
            p.add_argument("--bond-env-kb", type=int, default=8, help="bond crystal field: functions of r_ij")
            p.add_argument("--reach", type=float, default=4.2, help="bond crystal field: reach of k from i [Å]")
        if name == "onsite":
            p.add_argument("--run", default=None, help="a Hamiltonian run folder (optional)")
    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
