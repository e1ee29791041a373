"""Discrete-time noise schedules shared by the three corruptions (t = 0 … T, t = 0 is clean data).

* fractional coordinates: variance-exploding geometric ``σ_t = σ_min (σ_max/σ_min)^{(t-1)/(T-1)}``
  for ``t = 1 … T`` (``σ_0 = 0``), as in DiffCSP (Jiao et al., NeurIPS 2023, Sec. 3.3, σ from 0.005
  to 0.5) and score-based SDE models (Song et al., ICLR 2021, Eq. 31);
* lattice: DDPM cosine schedule ``ᾱ_t = f(t)/f(0)``, ``f(t) = cos²(π/2 (t/T + s)/(1 + s))``,
  ``s = 0.008`` (Nichol & Dhariwal, ICML 2021, Eq. 17), clipped so that ``β_t ≤ 0.999``;
* atom types: the absorbing-state (MASK) chain of D3PM (Austin et al., NeurIPS 2021, App. A.2.2)
  with the linear survival schedule ``ᾱ_t = 1 − t/T`` (probability that a type is still unmasked
  at step ``t``), i.e. ``β_t = 1 − ᾱ_t/ᾱ_{t−1} = 1/(T − t + 1)`` — the "mutual-information"
  schedule of D3PM for the absorbing state; every type is masked at ``t = T``.

All arrays are NumPy float64 of length ``T + 1`` indexed by the step ``t``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from difcrys.errors import ConfigError

__all__ = ["Schedules", "make_schedules"]


@dataclasses.dataclass(frozen=True)
class Schedules:
    """Tabulated schedules (length ``T + 1``; index 0 is the clean state).

    Attributes:
        T: number of diffusion steps.
        sigma: ``[T+1]`` wrapped-normal widths of fractional coordinates (``sigma[0] = 0``).
        alpha_bar_lattice: ``[T+1]`` DDPM ``ᾱ_t`` of the lattice (``ᾱ_0 = 1``).
        alpha_bar_types: ``[T+1]`` probability that an atom type is not yet masked (``ᾱ_0 = 1``,
            ``ᾱ_T = 0``).
    """

    T: int
    sigma: np.ndarray
    alpha_bar_lattice: np.ndarray
    alpha_bar_types: np.ndarray

    @property
    def beta_types(self) -> np.ndarray:
        """``[T+1]`` per-step masking probabilities ``β_t`` of the seed's ``Q_t`` (``β_0 = 0``)."""
        ab = self.alpha_bar_types
        b = np.zeros_like(ab)
        b[1:] = 1.0 - ab[1:] / np.maximum(ab[:-1], 1e-300)
        return b


def make_schedules(T: int = 1000, sigma_min: float = 0.005, sigma_max: float = 0.5,
                   cosine_s: float = 0.008) -> Schedules:
    """Build :class:`Schedules` (see the module docstring for the formulas).

    Raises:
        ConfigError: ``T < 2`` or ``0 < sigma_min < sigma_max`` violated.
    """
    T = int(T)
    if T < 2:
        raise ConfigError(f"diffusion.T must be >= 2, got {T}")
    if not (0 < sigma_min < sigma_max):
        raise ConfigError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    t = np.arange(T + 1, dtype=float)
    sigma = np.zeros(T + 1)
    sigma[1:] = sigma_min * (sigma_max / sigma_min) ** ((t[1:] - 1) / (T - 1))
    f = np.cos(0.5 * np.pi * (t / T + cosine_s) / (1 + cosine_s)) ** 2
    ab = f / f[0]
    beta = np.clip(1 - ab[1:] / ab[:-1], 0.0, 0.999)
    ab = np.concatenate([[1.0], np.cumprod(1 - beta)])
    ab_types = 1.0 - t / T
    return Schedules(T=T, sigma=sigma, alpha_bar_lattice=ab, alpha_bar_types=ab_types)
