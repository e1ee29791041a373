"""Generation metrics: StructureMatcher match/RMSE, validity rules, coverage, Wasserstein distances."""

import numpy as np
import pytest

from difcrys.crystal import Crystal
from difcrys.diffusion import metrics


def _perov(a=3.9, dx=0.0, symbols=("Sr", "Ti", "O", "O", "O")):
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], float)
    frac[1] += dx
    return Crystal.create(list(symbols), frac, np.eye(3) * a)


def test_csp_match_rate_and_rmse():
    ref = _perov()
    # the same structure translated and with permuted atom order matches with rms 0
    same = Crystal.create(["O", "Sr", "O", "Ti", "O"], (np.array([[0.5, 0.5, 0], [0, 0, 0], [0.5, 0, 0.5],
                                                                  [0.5, 0.5, 0.5], [0, 0.5, 0.5]]) + 0.13) % 1,
                          np.eye(3) * 3.9)
    shifted = _perov(dx=0.02)                 # small displacement: matched with a small rms
    other = _perov(a=3.9, symbols=("Ti", "Sr", "O", "O", "O"))  # A/B sites swapped: a different structure
    wrong = Crystal.create(["Sr", "Ti", "O", "O", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.1, 0.3, 0.2],
                                                         [0.7, 0.1, 0.5], [0.3, 0.8, 0.9]], np.diag([3.9, 3.9, 6.5]))  # beyond ltol
    res = metrics.csp_match([same, shifted, None, wrong], [ref, ref, ref, ref])
    assert res["rms"][0] == pytest.approx(0.0, abs=1e-6)
    # rms of a 0.02·3.9 Å displacement of one of 5 atoms (minus the mean shift), normalised by (V/n)^{1/3}
    assert 0 < res["rms"][1] < 0.05
    assert res["rms"][2] is None and res["n_invalid"] == 1
    assert res["rms"][3] is None
    # stol = 0.5 is loose: random positions in the right cell are matched, with a large rms
    loose = metrics.csp_match([Crystal.create(["Sr", "Ti", "O", "O", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.1, 0.3, 0.2],
                                                                           [0.7, 0.1, 0.5], [0.3, 0.8, 0.9]],
                                              np.eye(3) * 3.9)], [ref])
    assert loose["match_rate"] == 1.0 and loose["rmse"] > 0.2
    assert res["match_rate"] == pytest.approx(0.5)
    assert res["rmse"] == pytest.approx(np.mean([res["rms"][0], res["rms"][1]]))
    assert metrics.csp_match([other], [ref])["match_rate"] == 0.0


def test_validity_rules():
    good = _perov()
    assert metrics.structural_validity(good)
    close = Crystal.create(["Sr", "Ti"], [[0, 0, 0], [0.05, 0, 0]], np.eye(3) * 5.0, validate=False)  # 0.25 Å apart
    assert not metrics.structural_validity(close)
    assert not metrics.structural_validity(None)
    assert metrics.compositional_validity(good)                       # Sr2+ Ti4+ 3 O2-
    bad = Crystal.create(["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0, 0.5, 0.5]], np.eye(3) * 5.0)
    assert not metrics.compositional_validity(bad)                    # NaCl2 cannot be neutral
    carbon = Crystal.create(["C", "C"], [[0, 0, 0], [0.25, 0.25, 0.25]], np.eye(3) * 3.57)
    assert metrics.compositional_validity(carbon)                     # single element: valid


def test_coverage_closed_form():
    rs = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    rc = np.array([[0.0], [1.0], [2.0]])
    gs = np.array([[0.05, 0.0], [1.0, 0.1], [9.0, 9.0]])
    gc = np.array([[0.0], [1.0], [0.0]])
    cov = metrics.coverage((gs, gc), (rs, rc), struc_cutoff=0.2, comp_cutoff=1.0)
    # references 0 and 1 are covered (structure distance ≤ 0.2 and comp distance ≤ 1 std), 2 is not
    assert cov["cov_recall"] == pytest.approx(2 / 3)
    assert cov["cov_precision"] == pytest.approx(2 / 3)


def test_wasserstein_distances():
    a = [_perov(3.9), _perov(4.1)]
    assert metrics.wasserstein(a, a)["wdist_density"] == pytest.approx(0.0, abs=1e-12)
    d = metrics.wasserstein([_perov(3.9)], [_perov(4.1)])["wdist_density"]
    assert d == pytest.approx(abs(_perov(3.9).density() - _perov(4.1).density()))
    assert metrics.wasserstein(a, a)["wdist_num_elems"] == 0.0
