"""Post-processing: band gaps, non-self-consistent band structures and densities of states.

Hartree atomic units inside; public helpers state their units.
"""

from __future__ import annotations

import numpy as np

from difcrys.units import HARTREE_EV


def band_gap(eigenvalues, n_electrons: float, kpoints=None) -> dict:
    """Direct and indirect gap of an insulator from eigenvalues ``[nk, nb]`` [Ha].

    Returns a dict with ``gap`` (indirect, Ha; ≤ 0 for metals), ``direct_gap`` (Ha),
    ``vbm``, ``cbm`` (Ha), and the k indices of the VBM and CBM.
    """
    e = np.asarray(eigenvalues)
    nocc = int(round(n_electrons)) // 2
    if n_electrons % 2 or e.shape[1] <= nocc:
        return {"gap": 0.0, "direct_gap": 0.0, "vbm": None, "cbm": None, "k_vbm": None, "k_cbm": None}
    vb, cb = e[:, nocc - 1], e[:, nocc]
    ivb, icb = int(np.argmax(vb)), int(np.argmin(cb))
    return {"gap": float(cb[icb] - vb[ivb]), "direct_gap": float(np.min(cb - vb)), "vbm": float(vb[ivb]),
            "cbm": float(cb[icb]), "k_vbm": ivb, "k_cbm": icb}


def gap_ev(eigenvalues, n_electrons) -> float:
    return band_gap(eigenvalues, n_electrons)["gap"] * HARTREE_EV
