"""Identify the measured TaCr2O6 pattern with the shipped classifiers (space group and crystal system).

TaCr2O6 is rutile-derived, space group P4_2/mnm (136), tetragonal. Reports the
rank of the true label and the top-5 candidates of each shipped checkpoint.

Usage: python experiments/xrd/identify_measured.py
"""

from __future__ import annotations

import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import DATA, update_results  # noqa: E402

import numpy as np  # noqa: E402

from difcrys.xrd import identify as idf  # noqa: E402
from difcrys.xrd.patterns_io import read_pattern  # noqa: E402

TRUTH = {"spacegroup": "136", "crystal_system": "tetragonal"}


def main():
    pat = read_pattern(DATA / "xrd_measured" / "mattergen_TaCr2O6" / "xrd_measurement_TaCr2O6.dat")
    out = {}
    for kind, truth in TRUTH.items():
        clf = idf.load_model(kind)
        res = idf.identify(clf, pat.two_theta, pat.intensity, top=len(clf.class_names))
        labels = [c["label"] for c in res["candidates"]]
        out[kind] = {"true_label": truth, "rank_of_true_label": labels.index(truth) + 1 if truth in labels else None,
                     "n_classes": len(labels), "top5": res["candidates"][:5]}
        print(kind, out[kind], flush=True)
    update_results("identify_measured_tacr2o6", out)
    return out


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
