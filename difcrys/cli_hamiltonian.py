"""CLI for learned Hamiltonians: ``difcrys bands`` and ``difcrys evaluate`` on a hamiltonian run.

Examples::

    difcrys train configs/hamiltonian_graphene.yaml --run-dir runs/deeph_graphene
    difcrys evaluate runs/deeph_graphene [experiments/deeph/data/graphene_015.npz] --json
    difcrys evaluate runs/deeph_graphene 'experiments/deeph/data/graphene4_*.npz'  # a glob: one pooled set
    difcrys bands runs/deeph_graphene graphene.cif --path GMKG --plot bands.png
    difcrys bands experiments/deeph/data/graphene_000.npz --plot bands.png        # stored H, S
    difcrys bands runs/deeph_graphene tbg.xyz --sparse 20                         # large: eigenvalues near E_F
    difcrys bands runs/deeph_graphene data/graphene3_000.npz --compare data/graphene3_000.npz --plot cmp.png
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from difcrys.errors import ConfigError

__all__ = ["register", "cmd_bands", "cmd_evaluate"]


def _operator(args):
    """(TBOperator, description) from RUN_DIR STRUCTURE or an operator file / DeePTB folder."""
    inputs = list(args.inputs)
    src = inputs[0]
    if os.path.isdir(src) and os.path.isfile(os.path.join(src, "model.json")):
        if len(inputs) != 2:
            raise ConfigError("difcrys bands RUN_DIR STRUCTURE: a run folder needs a structure")
        from difcrys import io
        from difcrys.train.hamiltonian import load_run

        model, params = load_run(src, args.which)
        crystal = _load_operator(inputs[1]).crystal if _is_operator(inputs[1]) else io.read(inputs[1])
        t0 = time.time()
        op = model.predict_operator(params, crystal)
        return op, {"source": "model", "run_dir": src, "structure": inputs[1], "predict_s": time.time() - t0}
    if len(inputs) != 1:
        raise ConfigError("difcrys bands OPERATOR: an operator file (.npz) or DeePTB folder takes no structure")
    if not _is_operator(src):
        raise ConfigError(f"{src}: not a Hamiltonian run folder, .npz operator or DeePTB folder")
    return _load_operator(src), {"source": "deeptb" if os.path.isdir(src) else "npz", "path": src}


def _is_operator(path) -> bool:
    return str(path).endswith(".npz") or (os.path.isdir(path) and not os.path.isfile(os.path.join(path, "model.json")))


def _load_operator(path):
    """A stored operator: ``.npz`` (:meth:`TBOperator.to_npz`, PySCF data) or a DeePTB/ABACUS folder."""
    from difcrys.tb.operators import TBOperator

    if os.path.isdir(path):
        from difcrys.data.hamiltonian import read_hamiltonian_h5

        return TBOperator.from_hamiltonian_data(read_hamiltonian_h5(path))
    if str(path).endswith(".npz"):
        return TBOperator.from_npz(path)
    raise ConfigError(f"{path}: not an .npz operator or DeePTB folder")


def cmd_bands(args) -> int:
    from difcrys.tb import solve

    op, info = _operator(args)
    out = {**info, "n_atoms": op.n_atoms, "n_orbitals": op.n_orbitals, "n_blocks": int(len(op.pairs))}
    nel = args.electrons
    if nel is None and "n_electrons" in op.meta:
        nel = float(op.meta["n_electrons"])
    if args.sparse:
        sigma = args.sigma
        if sigma is None:
            raise ConfigError("--sparse needs --sigma (the energy [eV] around which to find eigenvalues)")
        t0 = time.time()
        vals = solve.eigs_near(op, sigma, n=args.sparse)
        out.update(eigenvalues_near_sigma_ev=vals.tolist(), sigma_ev=sigma, sparse_time_s=time.time() - t0)
    else:
        t0 = time.time()
        bs = solve.band_structure(op, npoints=args.points, path=args.path)
        out.update(path=bs["path"], labels=bs["labels"], bands_time_s=time.time() - t0)
        eig = bs["eigenvalues"]
        ref = args.reference
        if ref is None and nel is not None:
            ref = solve.fermi_level(eig, nel)
        out["reference_ev"] = ref
        if nel is not None:
            nocc = int(round(nel / 2))
            out["gap_ev"] = float(eig[:, nocc:].min() - eig[:, :nocc].max())
        ref_eig = None
        if args.compare:
            # reference bands (e.g. DFT H and S) on the same k-points, compared band by band within
            # --window of the reference's Fermi level
            rop = _load_operator(args.compare)
            if rop.n_orbitals != op.n_orbitals:
                raise ConfigError(f"--compare {args.compare}: {rop.n_orbitals} orbitals, the bands have {op.n_orbitals}")
            ref_eig = solve.eigenvalues(rop, bs["kpts"])
            rnel = nel if nel is not None else rop.meta.get("n_electrons")
            if rnel is None:
                raise ConfigError("--compare needs --electrons (or an operator that stores n_electrons)")
            mu_ref = solve.fermi_level(ref_eig, float(rnel))
            win = np.abs(ref_eig - mu_ref) < args.window
            d = np.abs(eig - ref_eig)[win]
            out.update(compare=args.compare, compare_fermi_level_ev=mu_ref, compare_window_ev=args.window,
                       compare_n=int(d.size), compare_mae_meV=1000.0 * float(d.mean()) if d.size else None,
                       compare_max_meV=1000.0 * float(d.max()) if d.size else None)
            if args.reference is None:
                ref = mu_ref
                out["reference_ev"] = ref
        e_dos, g = solve.dos(op, mesh=tuple(args.dos_mesh), method=args.dos_method, width=args.dos_width)
        if args.plot:
            _plot(bs, e_dos, g, ref, args.plot, title=os.path.basename(str(args.inputs[-1])),
                  ref_eig=ref_eig, ylim=(-args.window - 1.0, args.window + 1.0) if ref_eig is not None else None)
            out["plot"] = args.plot
        if args.out:
            np.savez_compressed(args.out, kpts=bs["kpts"], x=bs["x"], eigenvalues_ev=eig, dos_energy_ev=e_dos, dos=g)
            out["out"] = args.out
    print(json.dumps(out, indent=None if args.json else 2, default=float))
    return 0


def _plot(bs, e_dos, g, ref, filename, title="", ref_eig=None, ylim=None):
    from difcrys.dft.bandstructure import draw_bands_dos

    ref = 0.0 if ref is None else ref
    draw_bands_dos(bs, bs["eigenvalues"] - ref, e_dos - ref, g, filename, title,
                   ref_eig_ev=None if ref_eig is None else ref_eig - ref, labels=("prediction", "reference"),
                   ylim=ylim)


def cmd_evaluate(args) -> int:
    """``difcrys evaluate RUN_DIR [DATA]``: block MAE and band errors on the run's test sets or DATA."""
    from difcrys.train.config import load_yaml
    from difcrys.train.hamiltonian import _safe_band_errors, block_errors, load_operators, load_run, pool_band_errors

    model, params = load_run(args.run_dir, getattr(args, "which", "best") or "best")
    cfg = load_yaml(os.path.join(args.run_dir, "config.yaml"))
    data = cfg.get("data") or {}
    window = float(data.get("band_window_ev", 1.0))
    if not args.data:
        sets = data.get("test") or {}
    elif os.path.isdir(args.data):
        sets = {"data": {"deeptb": args.data}}
    elif any(c in args.data for c in "*?["):  # a glob pattern: one pooled set
        sets = {"data": {"glob": args.data}}
    else:
        sets = {"data": {"files": [args.data]}}
    if not sets:
        raise ConfigError("no DATA given and the run's config has no data.test sets")
    res = {}
    for name, spec in sets.items():
        ops = load_operators(spec, os.getcwd())
        r = block_errors(model, params, ops)
        r["bands"] = [_safe_band_errors(model, params, op, window) for op in ops]
        r["bands_pooled"] = pool_band_errors(r["bands"])
        res[name] = r
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=2, default=float)
    if args.json:
        print(json.dumps(res, default=float))
    else:
        for name, r in res.items():
            print(f"{name}: {r['n_structures']} structures, H block MAE {r['mae_H_meV']:.3f} meV "
                  f"(max {r['max_H_meV']:.2f} meV; {r['mae_H_gauge_meV']:.3f} meV without each structure's "
                  f"constant potential offset), S block MAE {r['mae_S']:.2e}")
            pooled = {k: v for k, v in r["bands_pooled"].items() if k.startswith("model_") and k.endswith("mae_meV")}
            if pooled:
                print("  all bands |E-E_F|<%.1f eV: " % window + ", ".join(f"{k[6:-8]} MAE {v:.2f} meV"
                                                                          for k, v in pooled.items()))
            for b in r["bands"]:
                if "error" in b:
                    print(f"  bands: {b['error']}")
                    continue
                keys = [k for k in b if k.startswith("model_") and k.endswith("mae_meV")]
                print("  bands |E-E_F|<%.1f eV: " % window + ", ".join(f"{k[6:-8]} MAE {b[k]:.2f} meV" for k in keys
                                                                      if b[k] is not None))
    return 0


def register(subparsers) -> None:
    """Add ``difcrys bands``."""
    b = subparsers.add_parser("bands", help="bands and DOS from a learned Hamiltonian (RUN_DIR STRUCTURE) or "
                                            "stored H/S (.npz or DeePTB folder)")
    b.add_argument("inputs", nargs="+", metavar="RUN_DIR STRUCTURE | OPERATOR")
    b.add_argument("--path", default=None, help="k-path in ASE labels, e.g. GMKG (default: standard path)")
    b.add_argument("--points", type=int, default=100, help="k-points along the path")
    b.add_argument("--electrons", type=float, default=None, help="valence electrons per cell (for E_F and gap)")
    b.add_argument("--reference", type=float, default=None, help="energy zero of the plot [eV]")
    b.add_argument("--dos-mesh", type=int, nargs=3, default=[12, 12, 12], metavar="N")
    b.add_argument("--dos-method", choices=["gaussian", "tetrahedron"], default="gaussian")
    b.add_argument("--dos-width", type=float, default=0.1, help="Gaussian DOS width [eV]")
    b.add_argument("--sparse", type=int, default=0, metavar="N",
                   help="large systems: only the N eigenvalues at Γ nearest --sigma (shift-invert)")
    b.add_argument("--sigma", type=float, default=None, help="energy [eV] for --sparse")
    b.add_argument("--which", choices=["best", "last"], default="best")
    b.add_argument("--compare", default=None, metavar="OPERATOR",
                   help="reference H, S (.npz or DeePTB folder, e.g. the DFT ones): its bands on the same path are "
                        "overlaid and compared band by band (MAE, max) within --window of its Fermi level")
    b.add_argument("--window", type=float, default=2.0, help="half-width [eV] of the --compare window")
    b.add_argument("--plot", default=None, help="bands + DOS figure (PNG/PDF)")
    b.add_argument("--out", default=None, help="write k-points, bands and DOS (.npz)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bands)
