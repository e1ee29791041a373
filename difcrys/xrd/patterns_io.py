"""Reading and writing measured powder patterns.

Accepted text formats (``#``, ``!`` and ``;`` start comments; commas or whitespace separate):

* **xy**: two columns ``2θ intensity`` or three ``2θ intensity σ`` per line;
* **start–step–end**: a first line with three numbers ``2θ_start step 2θ_end``
  followed by the intensities (any number per line), e.g. FullProf's free
  format / the TaCr2O6 data in ``shared/data/xrd_measured``.

Every problem (missing file, wrong number of columns, NaN/inf, non-increasing 2θ,
too few points, count mismatch) is a :class:`~difcrys.errors.FileFormatError`.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import numpy as np

from difcrys.errors import FileFormatError


@dataclasses.dataclass
class MeasuredPattern:
    """A measured pattern.

    Attributes:
        two_theta: ``[N]`` strictly increasing 2θ [deg].
        intensity: ``[N]`` counts.
        sigma: ``[N]`` standard deviations (given, or sqrt(max(I, 1)) for counts).
        path: source file.
    """

    two_theta: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray
    path: str = ""


def _rows(path: pathlib.Path) -> list[list[str]]:
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        for c in "#!;":
            line = line.split(c, 1)[0]
        line = line.replace(",", " ").strip()
        if line:
            rows.append(line.split())
    return rows


def _floats(tokens, path, lineno) -> list[float]:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise FileFormatError(f"{path}: non-numeric value in data line {lineno}: {' '.join(tokens)!r}") from None


def read_pattern(path, min_points: int = 5) -> MeasuredPattern:
    """Read a powder pattern file (xy / xye / start-step-end).

    Args:
        path: file path.
        min_points: fewer points than this is an error.

    Raises:
        FileFormatError: missing file or malformed content (message names the problem).
    """
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileFormatError(f"pattern file not found: {path}")
    rows = _rows(p)
    if not rows:
        raise FileFormatError(f"{path}: no data lines")
    first = _floats(rows[0], path, 1)
    sigma = None
    if len(first) == 3 and len(rows) > 1 and all(len(r) != 3 for r in rows[1:]):
        start, step, end = first
        vals = [v for i, r in enumerate(rows[1:], 2) for v in _floats(r, path, i)]
        if not (math.isfinite(start) and math.isfinite(step) and math.isfinite(end)) or step <= 0 or end <= start:
            raise FileFormatError(f"{path}: bad header 'start step end' = {first}")
        n = int(round((end - start) / step)) + 1
        if len(vals) != n:
            raise FileFormatError(f"{path}: header {start} {step} {end} implies {n} intensities, found {len(vals)}")
        tt = start + step * np.arange(n)
        y = np.asarray(vals, float)
    else:
        widths = {len(r) for r in rows}
        if len(widths) != 1:
            raise FileFormatError(f"{path}: inconsistent number of columns {sorted(widths)}; expected 2 (2θ, I) "
                                  "or 3 (2θ, I, σ) on every line")
        w = widths.pop()
        if w not in (2, 3):
            raise FileFormatError(f"{path}: {w} column(s) per line; expected 2 (2θ, I) or 3 (2θ, I, σ), or a "
                                  "'start step end' header followed by intensities")
        data = np.array([_floats(r, path, i) for i, r in enumerate(rows, 1)], float)
        tt, y = data[:, 0], data[:, 1]
        if w == 3:
            sigma = data[:, 2]
    if not np.all(np.isfinite(tt)) or not np.all(np.isfinite(y)):
        bad = np.where(~(np.isfinite(tt) & np.isfinite(y)))[0]
        raise FileFormatError(f"{path}: NaN or infinite values at {len(bad)} point(s), first at index {bad[0]}")
    if sigma is not None and (not np.all(np.isfinite(sigma)) or np.any(sigma <= 0)):
        raise FileFormatError(f"{path}: the σ column must be finite and > 0")
    if len(tt) < min_points:
        raise FileFormatError(f"{path}: only {len(tt)} points (need >= {min_points})")
    if np.any(np.diff(tt) <= 0):
        raise FileFormatError(f"{path}: 2θ values must be strictly increasing")
    if tt[0] < 0 or tt[-1] >= 180:
        raise FileFormatError(f"{path}: 2θ must lie in [0, 180) degrees, got {tt[0]}..{tt[-1]}")
    if sigma is None:
        sigma = np.sqrt(np.maximum(y, 1.0))
    return MeasuredPattern(two_theta=tt, intensity=y, sigma=sigma, path=str(path))


def write_xy(path, two_theta, intensity, header: str = "") -> None:
    """Write a two-column ``2θ intensity`` file."""
    data = np.column_stack([np.asarray(two_theta, float), np.asarray(intensity, float)])
    np.savetxt(path, data, fmt="%.6f", header=header)
