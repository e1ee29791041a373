"""``difcrys predict RUN_DIR STRUCTURES...``: predictions of a trained property model.

``RUN_DIR`` is a folder written by :func:`difcrys.train.property.train_property` (``config.json``
+ ``best.msgpack``); each structure is a file (CIF, POSCAR, extxyz; every frame/block of a
multi-structure file is predicted) or a built-in example name. Output: one line per structure
``source  formula  value unit`` or, with ``--json``, a list of objects.
"""

from __future__ import annotations

import json

from difcrys.errors import DifcrysError

__all__ = ["register", "cmd_predict", "read_structures"]


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


def register(subparsers) -> None:
    """Add the ``predict`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser("predict", help="predict a property with a trained model (CGCNN / equivariant)",
                              description="Predict the target of a trained property run for each structure.")
    p.add_argument("run_dir", help="run folder of a property model (config.json, best.msgpack)")
    p.add_argument("structures", nargs="+", help="structure files (CIF, POSCAR, extxyz) or example names")
    p.add_argument("--which", default="best", choices=["best", "checkpoint"], help="weights to use (default best)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_predict)
