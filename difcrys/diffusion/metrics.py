"""Evaluation metrics of crystal generation (the CDVAE / DiffCSP protocol).

* **CSP** (:func:`csp_match`): match rate and RMSE with pymatgen's ``StructureMatcher(stol=0.5,
  angle_tol=10, ltol=0.3)`` (DiffCSP, Jiao et al. 2023, Sec. 4.1; CDVAE, Xie et al. 2022): a
  prediction matches when ``get_rms_dist`` is not None; RMSE is the mean of its first element (the
  RMS displacement normalised by ``(V/n)^{1/3}``) over matched pairs.
* **validity** (:func:`structural_validity`, :func:`compositional_validity`): all interatomic
  distances > 0.5 Å (periodic images included) and volume > 0.1 Å³; SMACT charge neutrality with the
  Pauling electronegativity test, single elements and all-metal alloys counted valid (CDVAE's rules,
  via ``smact.screening.smact_validity`` with the ``smact14`` oxidation-state set).
* **coverage** (:func:`coverage`): COV-R / COV-P of CDVAE (their App. G): structure fingerprints are
  site-averaged CrystalNN "ops" fingerprints, composition fingerprints Magpie ``ElementProperty``
  (both from matminer — optional dependency ``pip install difcrys[diffusion-metrics]``), composition
  fingerprints standardised with the reference set's mean/std (CDVAE uses fixed Materials Project
  statistics; features constant over the references are left unscaled); a generated structure covers a
  reference one when both fingerprint distances are below the thresholds (:data:`COV_CUTOFFS`).
* **property distances** (:func:`wasserstein`): 1-D Wasserstein distances between the generated and
  reference distributions of density [g/cm³] and number of distinct elements.
* **uniqueness / novelty** (:func:`uniqueness_novelty`): fraction of valid samples not matched
  (StructureMatcher, default tolerances) by an earlier sample / by any training structure of the
  same reduced composition.
"""

from __future__ import annotations

import warnings

import numpy as np

from difcrys.errors import ConfigError

__all__ = ["COV_CUTOFFS", "structural_validity", "compositional_validity", "csp_match", "coverage",
           "wasserstein", "uniqueness_novelty", "fingerprints", "summary_gen"]

# CDVAE's coverage thresholds (struc: CrystalNN fingerprint distance, comp: normalised Magpie distance)
COV_CUTOFFS = {"mp_20": {"struc": 0.4, "comp": 10.0}, "carbon_24": {"struc": 0.2, "comp": 4.0},
               "perov_5": {"struc": 0.2, "comp": 4.0}}


def _pmg(c):
    from difcrys.io import to_pymatgen

    return to_pymatgen(c)


def structural_validity(crystal, min_distance: float = 0.5, min_volume: float = 0.1) -> bool:
    """All distances (periodic images included) > ``min_distance`` Å and volume > ``min_volume`` Å³."""
    from difcrys.crystal import min_image_distance

    if crystal is None:
        return False
    m = np.asarray(crystal.mask)
    L = np.asarray(crystal.lattice, float)
    vol = abs(np.linalg.det(L))
    if not np.isfinite(vol) or vol <= min_volume:
        return False
    if m.sum() < 2:
        # single atom: its nearest image is the shortest lattice vector
        return bool(np.min(np.linalg.norm(L, axis=1)) > min_distance)
    d, _ = min_image_distance(np.asarray(crystal.frac)[m], L)
    return bool(d > min_distance)


def compositional_validity(crystal) -> bool:
    """SMACT charge neutrality + Pauling test (module docstring)."""
    try:
        from smact.screening import smact_validity
    except ImportError as e:  # pragma: no cover
        raise ConfigError("compositional validity needs smact (pip install smact)") from e
    if crystal is None:
        return False
    from pymatgen.core import Composition

    comp = Composition(crystal.formula)
    if len(comp.elements) == 1:
        return True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(smact_validity(comp, use_pauling_test=True, include_alloys=True, oxidation_states_set="smact14"))


def _matcher(stol=0.5, angle_tol=10, ltol=0.3):
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(stol=stol, angle_tol=angle_tol, ltol=ltol)


def csp_match(preds, refs, stol: float = 0.5, angle_tol: float = 10, ltol: float = 0.3) -> dict:
    """Match rate and RMSE of predicted vs reference structures (``None`` predictions count as misses).

    Returns:
        ``{"match_rate", "rmse", "n", "n_matched", "n_invalid", "rms": per-pair list (None when unmatched)}``.
    """
    sm = _matcher(stol, angle_tol, ltol)
    rms, n_inv = [], 0
    for p, r in zip(preds, refs):
        if p is None or not structural_validity(p):
            n_inv += p is None
            rms.append(None)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                d = sm.get_rms_dist(_pmg(p), _pmg(r))
        except Exception:  # pymatgen raises on degenerate lattices
            d = None
        rms.append(None if d is None else float(d[0]))
    ok = [x for x in rms if x is not None]
    return {"match_rate": len(ok) / max(len(rms), 1), "rmse": float(np.mean(ok)) if ok else None,
            "n": len(rms), "n_matched": len(ok), "n_invalid": n_inv, "rms": rms}


def fingerprints(crystals):
    """CrystalNN ("ops", site-averaged) and Magpie composition fingerprints ``([N, 61], [N, 132])``.

    Raises:
        ConfigError: matminer is not installed (names the extra to install).
    """
    try:
        from matminer.featurizers.composition.composite import ElementProperty
        from matminer.featurizers.site.fingerprint import CrystalNNFingerprint
    except ImportError as e:
        raise ConfigError("coverage (COV-R/COV-P) needs matminer: pip install 'difcrys[diffusion-metrics]' "
                          f"({e})") from None
    from pymatgen.core import Composition

    cnn = CrystalNNFingerprint.from_preset("ops")
    ep = ElementProperty.from_preset("magpie")
    S, C = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in crystals:
            s = _pmg(c)
            try:
                site = np.array([cnn.featurize(s, i) for i in range(len(s))])
                S.append(site.mean(0))
            except Exception:
                S.append(np.full(len(cnn.feature_labels()), np.nan))
            C.append(np.asarray(ep.featurize(Composition(c.formula)), float))
    return np.asarray(S, float), np.asarray(C, float)


def coverage(gen_fp, ref_fp, struc_cutoff: float, comp_cutoff: float) -> dict:
    """COV-R (recall: fraction of references within both cutoffs of some sample) and COV-P (precision).

    Args:
        gen_fp, ref_fp: ``(struct [N,Fs], comp [N,Fc])`` fingerprints of valid samples / references.
    """
    from scipy.spatial.distance import cdist

    gs, gc = gen_fp
    rs, rc = ref_fp
    mu, sd = np.nanmean(rc, 0), np.nanstd(rc, 0)
    sd = np.where(sd > 1e-8, sd, 1.0)  # features constant over the references: left unscaled
    gc, rc = (gc - mu) / sd, (rc - mu) / sd
    gs, gc, rs, rc = (np.nan_to_num(a, nan=1e6) for a in (gs, gc, rs, rc))
    ds = cdist(gs, rs)
    dc = cdist(gc, rc)
    hit = (ds <= struc_cutoff) & (dc <= comp_cutoff)
    return {"cov_recall": float(hit.any(0).mean()), "cov_precision": float(hit.any(1).mean())}


def wasserstein(gen_crystals, ref_crystals) -> dict:
    """Wasserstein distances of density [g/cm³] and of the number of distinct elements."""
    from scipy.stats import wasserstein_distance

    def props(cs):
        return (np.array([c.density() for c in cs]), np.array([len(set(c.symbols)) for c in cs]))

    gd, ge = props(gen_crystals)
    rd, re_ = props(ref_crystals)
    return {"wdist_density": float(wasserstein_distance(gd, rd)), "wdist_num_elems": float(wasserstein_distance(ge, re_))}


def uniqueness_novelty(gen_crystals, train_crystals) -> dict:
    """Fraction of unique samples and of samples not in the training set (composition-bucketed matching)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    sm = StructureMatcher()

    def key(c):
        from pymatgen.core import Composition

        return Composition(c.formula).reduced_formula

    train_by = {}
    for c in train_crystals:
        train_by.setdefault(key(c), []).append(c)
    seen, n_unique, n_novel = {}, 0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in gen_crystals:
            k = key(c)
            s = _pmg(c)
            if not any(sm.fit(s, o) for o in seen.get(k, [])):
                n_unique += 1
            seen.setdefault(k, []).append(s)
            if not any(sm.fit(s, _pmg(o)) for o in train_by.get(k, [])):
                n_novel += 1
    n = max(len(gen_crystals), 1)
    return {"uniqueness": n_unique / n, "novelty": n_novel / n}


def summary_gen(samples, refs, train=None, dataset: str = "perov_5", with_coverage: bool = True) -> dict:
    """De novo metrics of ``samples`` (list of Crystal or None: invalid/failed ones are counted).

    Returns:
        dict with ``n_samples``, ``n_failed`` (did not pass :meth:`Crystal.validate`), structural /
        compositional / overall validity, COV-R/COV-P (if matminer is present), Wasserstein distances
        and (with ``train``) uniqueness/novelty.
    """
    n = len(samples)
    sv = [structural_validity(c) for c in samples]
    cv = [compositional_validity(c) for c in samples]
    valid = [c for c, a, b in zip(samples, sv, cv) if a and b]
    out = {"n_samples": n, "n_failed": sum(c is None for c in samples),
           "valid_structural": float(np.mean(sv)), "valid_compositional": float(np.mean(cv)),
           "valid_overall": len(valid) / max(n, 1)}
    if valid:
        out.update(wasserstein(valid, refs))
    if with_coverage and valid:
        try:
            cut = COV_CUTOFFS.get(dataset, COV_CUTOFFS["mp_20"])
            out.update(coverage(fingerprints(valid), fingerprints(refs), cut["struc"], cut["comp"]))
            out["cov_cutoffs"] = cut
        except ConfigError as e:
            out["coverage_unavailable"] = str(e)
    if train is not None and valid:
        out.update(uniqueness_novelty(valid, train))
    return out
