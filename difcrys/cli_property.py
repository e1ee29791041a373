"""Property-model commands: ``difcrys predict RUN_DIR STRUCTURES...`` and the property branch of
``difcrys evaluate RUN_DIR [DATA]``.

``RUN_DIR`` is a folder written by :func:`difcrys.train.property.train_property` or
``difcrys train configs/property_*.yaml`` (``config.json`` + orbax ``best/``). For ``predict``
each structure is a file (CIF, POSCAR, extxyz; every frame/block of a multi-structure file is
predicted) or a built-in example name. Output: one line per structure ``source  formula  value
unit`` or, with ``--json``, a list of objects. ``evaluate`` reports the MAE (target units) on the
run's recorded test split, or on ``DATA`` (``SET:PART`` of the shared data, e.g.
``perov_5:test``, or a CIF-in-CSV file holding the target column).
"""

from __future__ import annotations

import json
import os

from difcrys.errors import DifcrysError

__all__ = ["register", "cmd_predict", "cmd_evaluate", "read_structures"]


def read_structures(sources) -> list[tuple[str, object]]:
    """``(label, Crystal)`` for every structure in the files / example names ``sources``."""
    import pathlib

    from difcrys import io

    out = []
    for src in sources:
        p = pathlib.Path(src)
        if p.exists():
            cl = io.read_many(p)
            for k, c in enumerate(cl):
                out.append((src if len(cl) == 1 else f"{src}[{k}]", c))
        else:
            out.append((src, io.read(src)))  # example name (raises a clear error otherwise)
    if not out:
        raise DifcrysError("predict needs at least one structure")
    return out


def cmd_predict(args) -> int:
    from difcrys.train.property import load_predictor

    pred = load_predictor(args.run_dir, args.which)
    items = read_structures(args.structures)
    values = pred([c for _, c in items])
    rows = [{"source": s, "formula": c.formula, pred.config.target: float(v), "units": pred.units}
            for (s, c), v in zip(items, values)]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(f"{r['source']}\t{r['formula']}\t{r[pred.config.target]:.6g} {pred.units}".rstrip())
    return 0


def cmd_evaluate(args) -> int:
    """``difcrys evaluate RUN_DIR [DATA]`` for a property run (dispatched by the run's ``task``).

    ``args``: ``run_dir``, ``data`` (None: the run's test split), ``which`` (best | last),
    ``json``, ``out`` (write the JSON there, and a parity plot beside it); ``task`` and
    ``n_samples`` (diffusion options) are ignored.
    """
    from difcrys.train.property import evaluate_property_run

    out_path = getattr(args, "out", None)
    plot = None
    if out_path:
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        plot = os.path.splitext(out_path)[0] + "_parity.png"
    res = evaluate_property_run(args.run_dir, getattr(args, "data", None), getattr(args, "which", "best") or "best",
                                plot=plot)
    if out_path:
        with open(out_path, "w") as f:
            json.dump(res, f, indent=2)
    if getattr(args, "json", False):
        print(json.dumps(res))
    else:
        u = res["units"]
        print(f"{res['target']} on {res['data']} ({res['n']} structures): MAE {res['mae']:.4g} {u}, "
              f"RMSE {res['rmse']:.4g} {u} (training-set mean: MAE {res['mae_of_training_mean']:.4g} {u})")
    return 0


def register(subparsers) -> None:
    """Add the ``predict`` subcommand to an argparse subparsers object (``evaluate`` and ``train``
    are registered by :mod:`difcrys.cli_potential` and dispatch on the run's / config's task)."""
    p = subparsers.add_parser("predict", help="predict a property with a trained model (CGCNN / equivariant)",
                              description="Predict the target of a trained property run for each structure.")
    p.add_argument("run_dir", help="run folder of a property model (config.json, best/)")
    p.add_argument("structures", nargs="+", help="structure files (CIF, POSCAR, extxyz) or example names")
    p.add_argument("--which", default="best", choices=["best", "last", "checkpoint"],
                   help="weights: best validation (default) or last epoch ('checkpoint' = last)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_predict)
