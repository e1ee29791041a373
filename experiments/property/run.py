"""Structure → property experiment: CGCNN, the equivariant head and two baselines on one split.

Usage (from the repository root)::

    python experiments/property/run.py perov5 baselines
    nice python experiments/property/run.py perov5 cgcnn --max-time 1800
    nice python experiments/property/run.py perov5 equivariant --max-time 1800
    python experiments/property/run.py collect          # writes results.json

perov5 split (the canonical 11k training split of CDVAE is not in the shared data): the models are
trained on ``train_subset_dev`` (1,024) + ``val`` (3,787) = 4,811 structures, of which a fixed
random 10 % (seed 0) is held out for early stopping / model selection / the ridge alpha, i.e.
4,330 structures are fitted; all numbers are reported on ``test`` (3,785). Target: ``heat_ref``
[eV/atom]. Run folders go to ``experiments/property/runs/`` (git-ignored); the summary of each
run is copied into ``experiments/property/results/<task>_<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"

MODEL_KW = {
    "cgcnn": {},  # reference defaults: 64-wide atoms, 3 convolutions, 128 hidden
    "equivariant": {"n_scalars": 64, "n_vectors": 8, "n_layers": 3},
}
TRAIN_KW = {
    "cgcnn": {"lr": 2e-3, "batch_size": 64, "loss": "l1"},
    "equivariant": {"lr": 2e-3, "batch_size": 64, "loss": "l1"},
}


def perov5_split(seed: int = 0):
    from difcrys.data import Dataset, load_shared

    a, b = load_shared("perov_5", "train_subset_dev"), load_shared("perov_5", "val")
    test = load_shared("perov_5", "test")
    crystals = a.crystals + b.crystals
    props = {k: np.concatenate([a.properties[k], b.properties[k]]) for k in a.properties}
    ids = a.ids + b.ids
    perm = np.random.default_rng(seed).permutation(len(crystals))
    n_val = len(crystals) // 10
    sel = lambda idx, name: Dataset(crystals=[crystals[i] for i in idx], ids=[ids[i] for i in idx],
                                    properties={k: v[idx] for k, v in props.items()}, units=a.units, name=name)
    return sel(perm[n_val:], "perov5_fit"), sel(perm[:n_val], "perov5_holdout"), test


TASKS = {"perov5": (perov5_split, "heat_ref")}


def run_baselines(task: str):
    from difcrys.train.property import composition_ridge, mean_baseline

    tr, va, te = TASKS[task][0]()
    t = TASKS[task][1]
    ytr, yva, yte = (d.properties[t] for d in (tr, va, te))
    res = {"mean": {"val_mae": mean_baseline(ytr, yva), "test_mae": mean_baseline(ytr, yte)},
           "composition_ridge": composition_ridge(tr.crystals, ytr, va.crystals, yva, te.crystals, yte)}
    for name, r in res.items():
        r.update(n_train=len(tr), n_val=len(va), n_test=len(te), target=t)
        _save(task, name, r)
    print(json.dumps(res, indent=1))


def run_model(task: str, model: str, max_time: float | None, epochs: int):
    from difcrys.train.property import PropertyConfig, train_property

    tr, va, te = TASKS[task][0]()
    cfg = PropertyConfig(model=model, model_kwargs=MODEL_KW[model], target=TASKS[task][1], epochs=epochs,
                         max_time_s=max_time, **TRAIN_KW[model])
    res = train_property(cfg, tr, va, HERE / "runs" / f"{task}_{model}", te,
                         log=lambda *a: print(*a, flush=True), cache_dir=HERE / "runs" / "cache")
    res["config"] = {"model_kwargs": MODEL_KW[model], **TRAIN_KW[model], "max_time_s": max_time, "epochs": epochs}
    _save(task, model, res)
    print(json.dumps(res, indent=1))


def _save(task, name, r):
    RESULTS.mkdir(exist_ok=True)
    r = dict(r, command=" ".join(["python"] + sys.argv), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    (RESULTS / f"{task}_{name}.json").write_text(json.dumps(r, indent=2, default=float))


def collect():
    out = {"published_matbench_perovskites_mae_eV_per_atom": {
        "CGCNN": 0.045, "ALIGNN": 0.029, "coGN": 0.027,
        "_note": "matbench v0.1 leaderboard, 18,928 structures, 5-fold CV (~15k training structures per fold)"},
        "runs": {}}
    for p in sorted(RESULTS.glob("*.json")):
        out["runs"][p.stem] = json.loads(p.read_text())
    (HERE / "results.json").write_text(json.dumps(out, indent=2, default=float))
    names = {"mean": "training-set mean", "composition_ridge": "composition only (element fractions + pairs, ridge)",
             "cgcnn": "CGCNN (this repo)", "equivariant": "equivariant e3nn head (this repo)"}
    rows = ["| model | test MAE (eV) | hold-out MAE (eV) | fitted structures | epochs (best) | train time |",
            "|---|---|---|---|---|---|"]
    for key in ("perov5_mean", "perov5_composition_ridge", "perov5_cgcnn", "perov5_equivariant"):
        r = out["runs"].get(key)
        if r is None:
            continue
        ep = f"{r['epochs']} ({r['best_epoch']})" if "epochs" in r else "–"
        tt = f"{r['train_seconds'] / 60:.0f} min" if "train_seconds" in r else "–"
        rows.append(f"| {names[key.split('_', 1)[1]]} | {r['test_mae']:.4f} | {r['val_mae']:.4f} | {r['n_train']} | {ep} | {tt} |")
    table = "\n".join(rows)
    print(table)
    readme = HERE / "README.md"
    if readme.exists():
        txt = readme.read_text()
        a, b = "<!-- table -->", "<!-- /table -->"
        if a in txt and b in txt:
            txt = txt[:txt.index(a) + len(a)] + "\n" + table + "\n" + txt[txt.index(b):]
            readme.write_text(txt)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("task", choices=list(TASKS) + ["collect"])
    ap.add_argument("what", nargs="?", choices=["baselines", "cgcnn", "equivariant"])
    ap.add_argument("--max-time", type=float, default=None, help="training wall-time budget [s]")
    ap.add_argument("--epochs", type=int, default=300)
    a = ap.parse_args()
    if a.task == "collect":
        return collect()
    if a.what == "baselines":
        return run_baselines(a.task)
    return run_model(a.task, a.what, a.max_time, a.epochs)


if __name__ == "__main__":
    main()
