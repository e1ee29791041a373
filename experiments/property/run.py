"""Structure → property experiments: CGCNN, the equivariant head and two baselines on one split.

Usage (from the repository root)::

    python experiments/property/run.py TASK baselines            # training-set mean + composition ridge
    nice python experiments/property/run.py TASK cgcnn --max-time 1800
    nice python experiments/property/run.py TASK equivariant --max-time 1800
    python experiments/property/run.py collect                   # results.json + README tables
    python experiments/property/run.py mp20_split                # (re)make splits/mp_20_subset_split.json

Tasks (the data, split and model settings are those of the YAML configs
``configs/property_<task>_<model>.yaml``, i.e. exactly what ``difcrys train`` runs):

* ``perov5``: perov_5 ``heat_ref``; train_subset_dev + val (4,811) minus a fixed 10 % hold-out
  (seed 0) = 4,330 fitted, 481 held out; reported on ``test`` (3,785).
* ``mp20_formation`` / ``mp20_bandgap``: the 1,130-structure mp_20 subset, split 80/10/10 (seed 0)
  into 904 / 113 / 113 (ids in ``splits/mp_20_subset_split.json``);
  ``formation_energy_per_atom`` [eV/atom] and ``band_gap`` [eV].
* ``jarvis_tc``: jarvis_supercon Tc [K] (``tc_k = −prop``), the set's own train/val/test (846/105/105).

Run folders go to ``experiments/property/runs/`` (git-ignored); each run's summary is copied into
``experiments/property/results/<task>_<model>.json``. The baselines use the same fit/hold-out/test
structures as the models (the composition ridge α is chosen on the hold-out set).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = HERE / "results"
SPLIT_FILE = HERE / "splits" / "mp_20_subset_split.json"

#: task -> (target label, unit, title)
TASKS = {
    "perov5": ("heat_ref", "eV/atom", "perov_5 heat of formation (`heat_ref`)"),
    "mp20_formation": ("formation_energy_per_atom", "eV/atom", "mp_20 subset, formation energy per atom"),
    "mp20_bandgap": ("band_gap", "eV", "mp_20 subset, band gap"),
    "jarvis_tc": ("tc_k", "K", "jarvis_supercon, superconducting Tc"),
}


def config_path(task: str, model: str = "cgcnn") -> pathlib.Path:
    return ROOT / "configs" / f"property_{task}_{model}.yaml"


def datasets(task: str):
    """(fit, hold-out, test) Datasets of a task: the split of its cgcnn YAML config."""
    from difcrys.train.config import load_yaml
    from difcrys.train.property import property_datasets

    p = config_path(task)
    return property_datasets(load_yaml(p), p.parent)


def make_mp20_split(seed: int = 0):
    """80/10/10 split of the mp_20 subset (ids saved; existing file is overwritten)."""
    from difcrys.data import load_shared

    d = load_shared("mp_20_xrd_subset", "test_subset")
    perm = np.random.default_rng(seed).permutation(len(d))
    n_tr, n_va = int(0.8 * len(d)), int(0.1 * len(d))
    split = {"_about": f"mp_20_xrd_subset/test_subset.csv ({len(d):,} structures) split 80/10/10 with "
                       f"numpy.random.default_rng({seed}).permutation({len(d)}): first {n_tr} train, next {n_va} "
                       f"val, last {len(d) - n_tr - n_va} test (material_id lists). Made by "
                       "experiments/property/run.py mp20_split.",
             "train": [d.ids[i] for i in perm[:n_tr]], "val": [d.ids[i] for i in perm[n_tr:n_tr + n_va]],
             "test": [d.ids[i] for i in perm[n_tr + n_va:]]}
    SPLIT_FILE.parent.mkdir(exist_ok=True)
    SPLIT_FILE.write_text(json.dumps(split, indent=0))
    print({k: len(v) for k, v in split.items() if k != "_about"})


def run_baselines(task: str):
    from difcrys.train.property import composition_ridge, mean_baseline

    tr, va, te = datasets(task)
    t = TASKS[task][0]
    ytr, yva, yte = (d.properties[t] for d in (tr, va, te))
    res = {"mean": {"val_mae": mean_baseline(ytr, yva), "test_mae": mean_baseline(ytr, yte)},
           "composition_ridge": composition_ridge(tr.crystals, ytr, va.crystals, yva, te.crystals, yte)}
    for name, r in res.items():
        r.update(n_train=len(tr), n_val=len(va), n_test=len(te), target=t)
        _save(task, name, r)
    print(json.dumps(res, indent=1))


def run_model(task: str, model: str, max_time: float | None, epochs: int | None, tag: str = ""):
    from difcrys.train.property import train_property_config

    over = {"train": {"max_time_s": max_time}}
    if epochs is not None:
        over["train"]["epochs"] = epochs
    res = train_property_config(config_path(task, model), HERE / "runs" / f"{task}_{model}{tag}", overrides=over,
                                log=lambda *a: print(*a, flush=True), cache_dir=HERE / "runs" / "cache")
    res["config"] = {"file": str(config_path(task, model).relative_to(ROOT)), "max_time_s": max_time,
                     "epochs": epochs}
    _save(task, model + tag, res)
    print(json.dumps(res, indent=1, default=float))


def _save(task, name, r):
    RESULTS.mkdir(exist_ok=True)
    r = dict(r, command=" ".join(["python"] + sys.argv), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    (RESULTS / f"{task}_{name}.json").write_text(json.dumps(r, indent=2, default=float))


NAMES = {"mean": "training-set mean", "composition_ridge": "composition only (element fractions + pairs, ridge)",
         "cgcnn": "CGCNN (this repo)", "equivariant": "equivariant e3nn head (this repo)"}


def _row_name(key: str) -> str:
    for base, label in NAMES.items():
        if key == base:
            return label
        if key.startswith(base + "_"):
            return f"{label}, {key[len(base) + 1:].replace('_', ' ')}"
    return key


def _mae_standard_error(task, name, r) -> str:
    """Standard error of a test MAE, std(|error|) / sqrt(n), from the run's ``predictions_test.csv``
    (models) or recomputed for the mean baseline; "–" when the predictions are not at hand."""
    if name == "mean":
        tr, _, te = datasets(task)
        t = TASKS[task][0]
        e = np.abs(te.properties[t] - np.mean(tr.properties[t]))
    else:
        run = HERE / "runs" / f"{task}_{name}" / "predictions_test.csv"
        if name.endswith("60min") or not run.exists():
            return "–"
        y, p = np.loadtxt(run, delimiter=",", skiprows=1, usecols=(1, 2), unpack=True)
        e = np.abs(p - y)
    return f"{np.std(e, ddof=1) / np.sqrt(len(e)):.4f}"


def collect():
    out = {"runs": {}}
    for p in sorted(RESULTS.glob("*.json")):
        if p.stem == "profile":
            out["profile"] = json.loads(p.read_text())
            continue
        out["runs"][p.stem] = json.loads(p.read_text())
    (HERE / "results.json").write_text(json.dumps(out, indent=2, default=float))
    readme = HERE / "README.md"
    txt = readme.read_text() if readme.exists() else ""
    for task, (target, unit, _) in TASKS.items():
        keys = sorted((k for k in out["runs"] if k.startswith(task + "_")),
                      key=lambda k: (list(NAMES).index(next((b for b in NAMES if k[len(task) + 1:].startswith(b)),
                                                            "equivariant")), k))
        rows = [f"| model | test MAE ({unit}) | ± s.e. | hold-out MAE ({unit}) | fitted structures | epochs (best) "
                "| train time |", "|---|---|---|---|---|---|---|"]
        for key in keys:
            r = out["runs"][key]
            ep = f"{r['epochs']} ({r['best_epoch']})" if "epochs" in r else "–"
            tt = f"{r['train_seconds'] / 60:.0f} min" if "train_seconds" in r else "–"
            se = _mae_standard_error(task, key[len(task) + 1:], r)
            rows.append(f"| {_row_name(key[len(task) + 1:])} | {r['test_mae']:.4f} | {se} | {r['val_mae']:.4f} | "
                        f"{r['n_train']} | {ep} | {tt} |")
        table = "\n".join(rows)
        print(f"\n{task}\n{table}")
        a, b = f"<!-- table {task} -->", f"<!-- /table {task} -->"
        if a in txt and b in txt:
            txt = txt[:txt.index(a) + len(a)] + "\n" + table + "\n" + txt[txt.index(b):]
    if readme.exists():
        readme.write_text(txt)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("task", choices=list(TASKS) + ["collect", "mp20_split"])
    ap.add_argument("what", nargs="?", choices=["baselines", "cgcnn", "equivariant"])
    ap.add_argument("--max-time", type=float, default=None, help="training wall-time budget [s]")
    ap.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    ap.add_argument("--tag", default="", help="suffix of the run folder / result name (e.g. _lmax1)")
    a = ap.parse_args()
    if a.task == "collect":
        return collect()
    if a.task == "mp20_split":
        return make_mp20_split()
    if a.what == "baselines":
        return run_baselines(a.task)
    return run_model(a.task, a.what, a.max_time, a.epochs, a.tag)


if __name__ == "__main__":
    main()
