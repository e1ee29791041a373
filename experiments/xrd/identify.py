"""Train and evaluate the CrySTINet-style space-group classifier on simulated patterns of mp_20 crystals.

Labels: space-group numbers of the mp_20 subset in ../shared/data (classes with at
least --min-count structures). Structures are split per class into train / val /
test (70/10/20 %, seeded); the test structures are never seen in training. The
training patterns are perturbed simulations (strain, broadening, zero shift, B,
preferred orientation, impurity peaks, background, noise; see
difcrys.xrd.identify.Augment); the test patterns are fresh perturbations.

Reports top-1 / top-5 accuracy of (i) the CNN ensemble alone, (ii) cosine
similarity to class means alone, (iii) the combination, on held-out structures and
on fresh perturbations of the training structures.

Usage: nice python experiments/xrd/identify.py [--epochs 12] [--n-aug 16] [--ship]
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import sys
import time
import warnings

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import DATA, HERE, ROOT, update_results  # noqa: E402

from difcrys.xrd import identify as idf  # noqa: E402


def load(min_count: int, label: str = "spacegroup"):
    import pandas as pd
    from pymatgen.core import Structure

    from difcrys.xrd.api import crystal_from_pymatgen

    df = pd.read_csv(DATA / "mp_20_xrd_subset" / "test_subset.csv")
    if label == "crystal_system":
        from difcrys.crystal import CRYSTAL_SYSTEMS, crystal_system

        df["label"] = [CRYSTAL_SYSTEMS.index(crystal_system(n)) for n in df["spacegroup.number"]]
        to_name = lambda k: CRYSTAL_SYSTEMS[k]  # noqa: E731
    else:
        df["label"] = df["spacegroup.number"]
        to_name = str
    counts = collections.Counter(df["label"])
    classes = sorted(s for s, c in counts.items() if c >= min_count)
    keep = df[df["label"].isin(classes)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crystals = [crystal_from_pymatgen(Structure.from_str(c, fmt="cif"))[0] for c in keep.cif]
    labels = np.array([classes.index(s) for s in keep["label"]])
    return crystals, labels, [to_name(s) for s in classes], list(keep.material_id)


def split(labels, seed):
    rng = np.random.default_rng(seed)
    tr, va, te = [], [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.where(labels == c)[0])
        n = len(idx)
        nte, nva = max(1, round(0.2 * n)), max(1, round(0.1 * n))
        te += list(idx[:nte])
        va += list(idx[nte:nte + nva])
        tr += list(idx[nte + nva:])
    return np.array(tr), np.array(va), np.array(te)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-count", type=int, default=10)
    ap.add_argument("--n-aug", type=int, default=16, help="perturbed patterns per training structure")
    ap.add_argument("--n-aug-eval", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--submodels", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", choices=("spacegroup", "crystal_system"), default="spacegroup")
    ap.add_argument("--run-dir", default=None, help="default experiments/xrd/runs/identify_<label>")
    ap.add_argument("--ship", action="store_true", help="also write the checkpoint into difcrys/xrd/data")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (few structures, 1 epoch)")
    args = ap.parse_args(argv)
    t0 = time.time()
    args.run_dir = args.run_dir or str(HERE / "runs" / f"identify_{args.label}")
    crystals, labels, names, ids = load(args.min_count, args.label)
    tr, va, te = split(labels, args.seed)
    if args.quick:
        tr, va, te = tr[:40], va[:10], te[:10]
        args.n_aug, args.n_aug_eval, args.epochs = 2, 1, 1
    print(f"{len(names)} classes; structures train {len(tr)}, val {len(va)}, test {len(te)}", flush=True)
    grid = idf.Grid()
    prep = idf.prepare_crystals(crystals, grid)
    aug = idf.Augment()

    def sim(idx, n, seed):
        return idf.simulate_dataset([prep[i] for i in idx], labels[idx], n, grid, aug, seed=seed)

    Xtr, ytr = sim(tr, args.n_aug, args.seed + 1)
    Xva, yva = sim(va, args.n_aug_eval, args.seed + 2)
    Xte, yte = sim(te, args.n_aug_eval, args.seed + 3)
    Xseen, yseen = sim(tr, 1, args.seed + 4)
    t_sim = time.time() - t0
    print(f"simulated {len(Xtr) + len(Xva) + len(Xte) + len(Xseen)} patterns in {t_sim:.0f} s", flush=True)
    clf = idf.train_classifier(Xtr, ytr, Xva, yva, names, grid, n_submodels=args.submodels, epochs=args.epochs,
                               seed=args.seed)
    clf.label_kind = args.label
    clf.meta = {"dataset": f"mp_20_xrd_subset ({args.label})", "min_count": args.min_count,
                "n_train_structures": int(len(tr)), "seed": args.seed}
    res = {}
    for name, X, y in (("heldout_structures", Xte, yte), ("seen_structures_new_perturbations", Xseen, yseen)):
        res[name] = {
            "cnn_ensemble": idf.topk_accuracy(idf.predict_scores(clf, X, beta=0.0), y),
            "cosine_only": idf.topk_accuracy(np.asarray(idf.cosine_scores(X, clf.class_means)), y),
            "combined": idf.topk_accuracy(idf.predict_scores(clf, X), y),
            "n_patterns": int(len(y)),
        }
        print(name, res[name], flush=True)
    idf.save_model(clf, args.run_dir)
    if args.ship:
        idf.save_model(clf, idf.SHIPPED_MODEL.parent / f"identify_mp20_{args.label}")
    total = time.time() - t0
    if not args.quick:
        section = "identify" if args.label == "spacegroup" else f"identify_{args.label}"
        update_results(section, {
            "labels": f"{args.label} (mp_20 subset, classes with >= {args.min_count} structures)",
            "n_classes": len(names), "n_structures": {"train": int(len(tr)), "val": int(len(va)),
                                                      "test": int(len(te))},
            "n_aug_train": args.n_aug, "n_aug_eval": args.n_aug_eval, "epochs": args.epochs,
            "submodels": args.submodels, "beta": clf.beta, "accuracy": res,
            "chance_top1": float(np.max(np.bincount(labels[te])) / len(te)),
            "seconds": round(total, 1), "simulation_seconds": round(t_sim, 1),
            "checkpoint": str(pathlib.Path(args.run_dir).resolve().relative_to(ROOT))
            if pathlib.Path(args.run_dir).resolve().is_relative_to(ROOT) else args.run_dir,
        })
    return res


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", False)
    main()
