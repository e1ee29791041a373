"""CLI for learned Hamiltonians: ``difcrys bands`` and ``difcrys evaluate`` on a hamiltonian run.

Examples::

    difcrys train configs/hamiltonian_graphene.yaml --run-dir runs/deeph_graphene
    difcrys evaluate runs/deeph_graphene [experiments/deeph/data/graphene_015.npz] --json
    difcrys bands runs/deeph_graphene graphene.cif --path GMKG --plot bands.png
    difcrys bands experiments/deeph/data/graphene_000.npz --plot bands.png        # stored H, S
    difcrys bands runs/deeph_graphene tbg.xyz --sparse 20                         # large: eigenvalues near E_F
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
    from difcrys.tb.operators import TBOperator

    inputs = list(args.inputs)
    src = inputs[0]
    if os.path.isdir(src) and os.path.isfile(os.path.join(src, "model.json")):
        if len(inputs) != 2:
            raise ConfigError("difcrys bands RUN_DIR STRUCTURE: a run folder needs a structure")
        from difcrys import io
        from difcrys.train.hamiltonian import load_run

        model, params = load_run(src, args.which)
        crystal = io.read(inputs[1])
        t0 = time.time()
        op = model.predict_operator(params, crystal)
        return op, {"source": "model", "run_dir": src, "structure": inputs[1], "predict_s": time.time() - t0}
    if len(inputs) != 1:
        raise ConfigError("difcrys bands OPERATOR: an operator file (.npz) or DeePTB folder takes no structure")
    if os.path.isdir(src):
        from difcrys.data.hamiltonian import read_hamiltonian_h5

        return TBOperator.from_hamiltonian_data(read_hamiltonian_h5(src)), {"source": "deeptb", "path": src}
    if src.endswith(".npz"):
        return TBOperator.from_npz(src), {"source": "npz", "path": src}
    raise ConfigError(f"{src}: not a Hamiltonian run folder, .npz operator or DeePTB folder")


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
        e_dos, g = solve.dos(op, mesh=tuple(args.dos_mesh), method=args.dos_method, width=args.dos_width)
        if args.plot:
            _plot(bs, e_dos, g, ref, args.plot, title=os.path.basename(str(args.inputs[-1])))
            out["plot"] = args.plot
        if args.out:
            np.savez_compressed(args.out, kpts=bs["kpts"], x=bs["x"], eigenvalues_ev=eig, dos_energy_ev=e_dos, dos=g)
            out["out"] = args.out
    print(json.dumps(out, indent=None if args.json else 2, default=float))
    return 0


def _plot(bs, e_dos, g, ref, filename, title=""):
    from difcrys.dft.bandstructure import draw_bands_dos

    ref = 0.0 if ref is None else ref
    draw_bands_dos(bs, bs["eigenvalues"] - ref, e_dos - ref, g, filename, title)


def cmd_evaluate(args) -> int:
    """``difcrys evaluate RUN_DIR [DATA]``: block MAE and band errors on the run's test sets or DATA."""
    from difcrys.train.config import load_yaml
    from difcrys.train.hamiltonian import _safe_band_errors, block_errors, load_operators, load_run

    model, params = load_run(args.run_dir, getattr(args, "which", "best") or "best")
    cfg = load_yaml(os.path.join(args.run_dir, "config.yaml"))
    data = cfg.get("data") or {}
    window = float(data.get("band_window_ev", 1.0))
    sets = {"data": {"files": [args.data]} if not os.path.isdir(args.data) else {"deeptb": args.data}} \
        if args.data else (data.get("test") or {})
    if not sets:
        raise ConfigError("no DATA given and the run's config has no data.test sets")
    res = {}
    for name, spec in sets.items():
        ops = load_operators(spec, os.getcwd())
        r = block_errors(model, params, ops)
        r["bands"] = [_safe_band_errors(model, params, op, window) for op in ops]
        res[name] = r
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=2, default=float)
    if args.json:
        print(json.dumps(res, default=float))
    else:
        for name, r in res.items():
            print(f"{name}: {r['n_structures']} structures, H block MAE {r['mae_H_meV']:.3f} meV "
                  f"(max {r['max_H_meV']:.2f} meV), S block MAE {r['mae_S']:.2e}")
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
    b.add_argument("--plot", default=None, help="bands + DOS figure (PNG/PDF)")
    b.add_argument("--out", default=None, help="write k-points, bands and DOS (.npz)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bands)
