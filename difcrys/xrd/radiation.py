"""Characteristic X-ray wavelengths [Å] and input checks for wavelengths and 2θ ranges.

Kα1, Kα2 and Kβ1 lines are the values of International Tables for Crystallography
Vol. C (2004), Table 4.2.2.1 (Bearden 1967 scale, as also used by pymatgen); ``Kα``
is the intensity-weighted mean (2 Kα1 + Kα2)/3. The Kα2/Kα1 intensity ratio is 0.5
(FullProf's default).
"""

from __future__ import annotations

import math

from difcrys.errors import ConfigError

WAVELENGTHS = {
    "CuKa": 1.54184, "CuKa1": 1.54056, "CuKa2": 1.54439, "CuKb1": 1.39222,
    "MoKa": 0.71073, "MoKa1": 0.70930, "MoKa2": 0.71359, "MoKb1": 0.63229,
    "CrKa": 2.29100, "CrKa1": 2.28970, "CrKa2": 2.29361, "CrKb1": 2.08487,
    "FeKa": 1.93735, "FeKa1": 1.93604, "FeKa2": 1.93998, "FeKb1": 1.75661,
    "CoKa": 1.79026, "CoKa1": 1.78896, "CoKa2": 1.79285, "CoKb1": 1.63079,
    "AgKa": 0.560885, "AgKa1": 0.559421, "AgKa2": 0.563813, "AgKb1": 0.497082,
}
KA2_RATIO = 0.5


def wavelength(value) -> float:
    """A wavelength [Å] from a float or a name such as ``"CuKa"``; raises ConfigError when invalid."""
    if isinstance(value, str):
        key = value.strip()
        try:
            return float(key)
        except ValueError:
            pass
        for name, lam in WAVELENGTHS.items():
            if name.lower() == key.lower().replace("α", "a").replace("β", "b"):
                return lam
        raise ConfigError(f"unknown radiation {value!r}; use a wavelength in Å or one of {sorted(WAVELENGTHS)}")
    try:
        lam = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"wavelength must be a number in Å or a radiation name, got {value!r}") from None
    if not math.isfinite(lam) or lam <= 0:
        raise ConfigError(f"wavelength must be a positive finite number of Å, got {value!r}")
    return lam


def kalpha_doublet(anode: str = "Cu", ratio: float = KA2_RATIO) -> tuple[tuple[float, float], tuple[float, float]]:
    """``((λ1, λ2), (w1, w2))`` for the Kα1/Kα2 doublet of an anode (Cu, Mo, Cr, Fe, Co, Ag).

    ``anode`` may also be ``"CuKa"``. Weights are ``(1, ratio)``.
    """
    el = str(anode).strip()
    el = el[:2] if len(el) >= 2 and el[1].islower() else el[:1]
    if f"{el}Ka1" not in WAVELENGTHS:
        raise ConfigError(f"no Kα doublet for anode {anode!r}; known: Cu, Mo, Cr, Fe, Co, Ag")
    if not ratio >= 0:
        raise ConfigError(f"Kα2/Kα1 ratio must be >= 0, got {ratio}")
    return (WAVELENGTHS[f"{el}Ka1"], WAVELENGTHS[f"{el}Ka2"]), (1.0, float(ratio))


def two_theta_range(rng, wavelength_min: float | None = None) -> tuple[float, float]:
    """Validate a 2θ range ``(lo, hi)`` in degrees: 0 <= lo < hi < 180."""
    try:
        lo, hi = (float(v) for v in rng)
    except (TypeError, ValueError):
        raise ConfigError(f"2θ range must be two numbers (degrees), got {rng!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError(f"2θ range must be finite, got {rng!r}")
    if not 0 <= lo < hi:
        raise ConfigError(f"empty or inverted 2θ range ({lo}, {hi}): need 0 <= min < max")
    if hi >= 180:
        raise ConfigError(f"2θ max must be below 180°, got {hi}")
    return lo, hi
