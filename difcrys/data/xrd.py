"""Powder-diffraction data files of the shared data folder.

* ``mp_20_xrd_subset/test_subset_xrd.npz``: ``material_id [M]`` and ``xrd [M, 512]``
  — pymatgen Cu Kα stick patterns binned to 512 bins over 2θ = 0–180°
  (heights I/100), rows aligned with ``test_subset.csv`` (gabeguo/cdvae_xrd).
* ``xrd_measured/*/xrd_measurement_*.dat``: a measured pattern; first line
  ``start step stop`` (2θ in degrees), then one intensity (counts) per line
  (MatterGen data release, Zeni et al., Nature 639, 624 (2025); CDLA-Permissive-2.0).
"""

from __future__ import annotations

import numpy as np

from difcrys.data._common import DatasetError, check_file
from difcrys.errors import FileFormatError


def read_xrd_npz(path) -> dict:
    """Read binned stick patterns: ``{"material_id": [M] str, "xrd": [M, B] float64, "two_theta": [B] deg}``.

    ``two_theta`` are the bin centres assuming B equal bins over 0–180°.
    """
    p = check_file(path)
    try:
        z = np.load(p, allow_pickle=False)
    except Exception as e:
        raise FileFormatError(f"{p}: not a readable npz ({type(e).__name__}: {e})") from e
    with z:
        if "xrd" not in z.files:
            raise FileFormatError(f"{p}: no 'xrd' array (arrays: {z.files})")
        xrd = np.asarray(z["xrd"], dtype=np.float64)
        ids = [str(s) for s in z["material_id"]] if "material_id" in z.files else [str(k) for k in range(len(xrd))]
    if xrd.ndim != 2 or len(xrd) == 0:
        raise DatasetError(f"{p}: expected a non-empty [M, bins] array, got shape {xrd.shape}")
    if not np.all(np.isfinite(xrd)):
        r = int(np.argwhere(~np.isfinite(xrd))[0][0])
        raise DatasetError(f"{p}: NaN or infinite value in field 'xrd' of row {r} ({ids[r]})")
    nb = xrd.shape[1]
    two_theta = (np.arange(nb) + 0.5) * (180.0 / nb)
    return {"material_id": ids, "xrd": xrd, "two_theta": two_theta}


def read_xrd_dat(path) -> tuple[np.ndarray, np.ndarray]:
    """Read a measured pattern ``start step stop`` + intensities → ``(two_theta [deg], intensity)``.

    Raises:
        FileFormatError: header malformed or the number of intensities does not match the 2θ grid.
    """
    p = check_file(path)
    with open(p) as fh:
        lines = [ln.strip() for ln in fh if ln.strip()]
    if not lines:
        raise DatasetError(f"{p}: empty file")
    try:
        start, step, stop = (float(x) for x in lines[0].split()[:3])
        y = np.array([float(x) for ln in lines[1:] for x in ln.split()], dtype=np.float64)
    except ValueError as e:
        raise FileFormatError(f"{p}: expected 'start step stop' then one intensity per line ({e})") from e
    n = int(round((stop - start) / step)) + 1
    if len(y) != n:
        raise FileFormatError(f"{p}: {len(y)} intensities for a 2θ grid {start}:{step}:{stop} of {n} points")
    if not np.all(np.isfinite(y)):
        raise DatasetError(f"{p}: NaN or infinite intensity at point {int(np.argwhere(~np.isfinite(y))[0][0])}")
    return start + step * np.arange(n), y
