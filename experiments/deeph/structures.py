"""Structures for the DeepH experiment: commensurate twisted bilayer graphene and graphene supercells.

Twisted bilayer (J. M. B. Lopes dos Santos, N. M. R. Peres, A. H. Castro Neto, Phys. Rev. B 86,
155449 (2012), Eqs. 1–3): for an integer ``m`` the twist angle is
``cos θ = (3m² + 3m + 1/2) / (3m² + 3m + 1)`` and the moiré cell, spanned by
``t1 = m a1 + (m+1) a2`` and ``t2 = −(m+1) a1 + (2m+1) a2`` of layer 1, holds
``N = 4 (3m² + 3m + 1)`` atoms (m = 29: θ = 1.12°, N = 10,444).
"""

from __future__ import annotations

import numpy as np

from difcrys.crystal import Crystal

A_CC = 2.46


def twisted_bilayer(m: int, spacing: float = 3.35, height: float = 20.0) -> Crystal:
    a1 = np.array([A_CC, 0.0])
    a2 = np.array([A_CC / 2, A_CC * np.sqrt(3) / 2])
    t1 = m * a1 + (m + 1) * a2
    t2 = -(m + 1) * a1 + (2 * m + 1) * a2
    # rotation taking layer 2's lattice vector (m+1) a1 + m a2 onto t1
    v = (m + 1) * a1 + m * a2
    th = np.arctan2(t1[1], t1[0]) - np.arctan2(v[1], v[0])
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    T = np.array([t1, t2])
    Tinv = np.linalg.inv(T)
    n_range = 3 * (m + 2)
    n1, n2 = np.meshgrid(np.arange(-n_range, n_range + 1), np.arange(-n_range, n_range + 1), indexing="ij")
    pts = n1.reshape(-1, 1) * a1 + n2.reshape(-1, 1) * a2
    frac_all, z_all = [], []
    for layer, R in enumerate((np.eye(2), rot)):
        for b in (np.zeros(2), (a1 + a2) / 3):
            p = (pts + b) @ R.T
            f = p @ Tinv
            f = f - np.floor(f + 1e-9)
            f = np.unique(np.round(f, 9) % 1.0, axis=0)
            frac_all.append(f)
            z_all.append(np.full(len(f), 0.5 * height + (layer - 0.5) * spacing))
    f2 = np.concatenate(frac_all)
    z = np.concatenate(z_all)
    n_expect = 4 * (3 * m * m + 3 * m + 1)
    if len(f2) != n_expect:
        raise RuntimeError(f"generated {len(f2)} atoms, expected {n_expect}")
    lat = np.zeros((3, 3))
    lat[0, :2], lat[1, :2], lat[2, 2] = t1, t2, height
    frac = np.concatenate([f2, (z / height)[:, None]], axis=1)
    return Crystal(numbers=np.full(len(frac), 6), frac=frac, lattice=lat, mask=np.ones(len(frac), bool))


def twist_angle_deg(m: int) -> float:
    return float(np.degrees(np.arccos((3 * m * m + 3 * m + 0.5) / (3 * m * m + 3 * m + 1))))


def graphene_supercell(n: int, height: float = 10.0) -> Crystal:
    a1, a2 = np.array([A_CC, 0, 0]), np.array([A_CC / 2, A_CC * np.sqrt(3) / 2, 0])
    lat = np.array([n * a1, n * a2, [0, 0, height]])
    frac = [[(b[0] + i) / n, (b[1] + j) / n, 0.5] for i in range(n) for j in range(n) for b in ((0, 0), (1 / 3, 1 / 3))]
    return Crystal(numbers=np.full(2 * n * n, 6), frac=np.array(frac), lattice=lat, mask=np.ones(2 * n * n, bool))
