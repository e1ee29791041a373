"""Goedecker–Teter–Hutter / Hartwigsen–Goedecker–Hutter separable pseudopotentials in reciprocal space.

Hartree atomic units. All functions are pure JAX and differentiable with
respect to the pseudopotential parameters, so that gradients of converged
properties w.r.t. ``rloc``, ``C_i``, ``r_l`` and ``h^l_ij`` are available.

Conventions (ABINIT's):
    * Local part, for G ≠ 0 (GTH96 Eq. 5 Fourier transformed; HGH98 Eq. 1):
      ``v_loc(q) = 1/Ω [ -4π Z e^{-x²/2}/q² + (2π)^{3/2} r³ e^{-x²/2}
      (C1 + C2 (3 − x²) + C3 (15 − 10x² + x⁴) + C4 (105 − 105x² + 21x⁴ − x⁶)) ]``
      with ``x = q r_loc``.
    * The G = 0 limit of the non-Coulomb part, ``ε_atm = 2π Z r_loc² + (2π)^{3/2} r_loc³ (C1 + 3C2
      + 15C3 + 105C4)``, is **not** put in the local potential: it enters only
      the separate ``psp_core`` energy ``N_el Σ_a ε_atm,a / Ω`` (ABINIT's "PspCore
      energy"), so Kohn–Sham eigenvalues are those ABINIT prints. Quantum ESPRESSO
      adds ``Σ_a ε_atm,a / Ω`` to every eigenvalue instead; gaps are unaffected.
    * Nonlocal part (HGH98 Eqs. 2–3): ``V_nl = Σ_a Σ_lm Σ_ij |p^a_ilm⟩ h^l_ij ⟨p^a_jlm|`` with
      ``⟨k+G|p_ilm⟩ = Ω^{-1/2} (−i)^l Y_lm(q̂) P_il(q) e^{−i q·R_a}``,
      ``P_il(q) = 4π ∫ r² p_i^l(r) j_l(qr) dr``. The phase ``(−i)^l`` cancels in
      every matrix element (both projectors of a pair share l) and is dropped.
      We use ``P_il(q) Y_lm(q̂) = P̃_il(q²) S_lm(q)`` with the real solid harmonic
      ``S_lm(q) = q^l Y_lm(q̂)`` (a polynomial), so the projector is smooth at q = 0.

References:
    S. Goedecker, M. Teter, J. Hutter, Phys. Rev. B 54, 1703 (1996).
    C. Hartwigsen, S. Goedecker, J. Hutter, Phys. Rev. B 58, 3641 (1998).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

LMAX = 3
NPROJ_MAX = 3


def local_form_factor(q2, zion, rloc, c):
    """Fourier transform of the GTH local potential times Ω, without the G = 0 divergence.

    Args:
        q2: ``[...]`` squared wave vectors |G|² [Bohr⁻²]; entries with q2 == 0 return 0.
        zion: valence charge.
        rloc: local radius [Bohr].
        c: ``[4]`` coefficients C1..C4 [Ha].

    Returns:
        ``Ω v_loc(q)`` [Ha·Bohr³], ``[...]``.
    """
    is0 = q2 < 1e-14
    q2s = jnp.where(is0, 1.0, q2)
    x2 = q2s * rloc**2
    g = jnp.exp(-x2 / 2)
    poly = (c[0] + c[1] * (3 - x2) + c[2] * (15 - 10 * x2 + x2**2)
            + c[3] * (105 - 105 * x2 + 21 * x2**2 - x2**3))
    v = -4 * jnp.pi * zion * g / q2s + (2 * jnp.pi) ** 1.5 * rloc**3 * g * poly
    return jnp.where(is0, 0.0, v)


def eps_atm(zion, rloc, c):
    """``ε_atm = lim_{q→0} [Ω v_loc(q) + 4πZ/q²]`` [Ha·Bohr³] (ABINIT's epsatm; HGH98 Eq. 1)."""
    return 2 * jnp.pi * zion * rloc**2 + (2 * jnp.pi) ** 1.5 * rloc**3 * (c[0] + 3 * c[1] + 15 * c[2] + 105 * c[3])


def _laguerre_coeffs(n: int, alpha: float) -> list[float]:
    """Coefficients a_k of the generalized Laguerre polynomial L_n^(α)(y) = Σ_k a_k y^k."""
    return [(-1) ** k * math.gamma(n + alpha + 1) / (math.gamma(alpha + k + 1) * math.factorial(n - k)
                                                    * math.factorial(k)) for k in range(n + 1)]


def projector_radial(l: int, i: int, q2, r):
    """``P_il(q) / q^l`` for the HGH projector ``p_i^l`` (i = 1, 2, 3) [Bohr^{3/2 + l}].

    Uses ``∫ r^{l+2+2n} e^{-pr²} j_l(qr) dr = √π q^l n! / (2^{l+2} p^{l+n+3/2}) e^{-q²/4p}
    L_n^{(l+1/2)}(q²/4p)`` with ``n = i − 1``, ``p = 1/(2 r²)`` and the HGH98 normalisation
    ``p_i^l(r) = √2 r^{l+2(i−1)} e^{−r²/2r_l²} / (r_l^{l+(4i−1)/2} √Γ(l+(4i−1)/2))`` (HGH98 Eq. 3).
    Smooth in ``q2`` (no division by q).
    """
    n = i - 1
    nu = l + (4 * i - 1) / 2
    norm = math.sqrt(2.0) / math.sqrt(math.gamma(nu))  # times r^{-nu}
    # p^{-(l+n+3/2)} = (2 r²)^{l+n+3/2}
    pref = 4 * math.pi * norm * math.sqrt(math.pi) * math.factorial(n) / 2 ** (l + 2) * 2 ** (l + n + 1.5)
    y = q2 * r**2 / 2
    lag = sum(a * y**k for k, a in enumerate(_laguerre_coeffs(n, l + 0.5)))
    # r^{-nu} * r^{2(l+n+3/2)} = r^{l + 3/2} (since nu = l + 2n + 3/2)
    return pref * r ** (l + 1.5) * jnp.exp(-y) * lag


def solid_harmonics(l: int, q):
    """Real solid harmonics ``S_lm(q) = |q|^l Y_lm(q̂)``, m = −l..l, ``[..., 2l+1]``.

    Real Y_lm as in e3nn/Wikipedia "real spherical harmonics" (orthonormal on the unit
    sphere, Condon–Shortley phase not applied); the order is m = −l, …, l.
    """
    x, y, z = q[..., 0], q[..., 1], q[..., 2]
    pi = math.pi
    if l == 0:
        return jnp.full(q.shape[:-1] + (1,), 0.5 / math.sqrt(pi), dtype=q.dtype)
    if l == 1:
        c = math.sqrt(3 / (4 * pi))
        return c * jnp.stack([y, z, x], -1)
    r2 = x * x + y * y + z * z
    if l == 2:
        return jnp.stack([
            math.sqrt(15 / (4 * pi)) * x * y,
            math.sqrt(15 / (4 * pi)) * y * z,
            math.sqrt(5 / (16 * pi)) * (3 * z * z - r2),
            math.sqrt(15 / (4 * pi)) * x * z,
            math.sqrt(15 / (16 * pi)) * (x * x - y * y),
        ], -1)
    if l == 3:
        return jnp.stack([
            math.sqrt(35 / (32 * pi)) * y * (3 * x * x - y * y),
            math.sqrt(105 / (4 * pi)) * x * y * z,
            math.sqrt(21 / (32 * pi)) * y * (5 * z * z - r2),
            math.sqrt(7 / (16 * pi)) * z * (5 * z * z - 3 * r2),
            math.sqrt(21 / (32 * pi)) * x * (5 * z * z - r2),
            math.sqrt(105 / (16 * pi)) * z * (x * x - y * y),
            math.sqrt(35 / (32 * pi)) * x * (x * x - 3 * y * y),
        ], -1)
    raise ValueError(f"l = {l} > 3 not supported")


def stack_species(params_list) -> dict:
    """Stack per-species GTH parameters (from :func:`difcrys.dft.gth_table.load_gth`) into traced arrays.

    Returns a dict of arrays with a leading species axis: ``zion [S]``, ``rloc [S]``,
    ``c [S, 4]``, ``r [S, 4]`` (projector radius per l; 1.0 where absent), ``h [S, 4, 3, 3]``.
    """
    S = len(params_list)
    zion = np.zeros(S)
    rloc = np.zeros(S)
    c = np.zeros((S, 4))
    r = np.ones((S, LMAX + 1))
    h = np.zeros((S, LMAX + 1, NPROJ_MAX, NPROJ_MAX))
    for s, p in enumerate(params_list):
        zion[s] = p.zion
        rloc[s] = p.rloc
        c[s, : len(p.c)] = p.c
        for l in range(LMAX + 1):
            n = int(p.nproj[l])
            if n:
                r[s, l] = p.r[l]
                h[s, l, :n, :n] = np.asarray(p.h[l])[:n, :n]
    return {"zion": jnp.asarray(zion), "rloc": jnp.asarray(rloc), "c": jnp.asarray(c),
            "r": jnp.asarray(r), "h": jnp.asarray(h)}


def projector_layout(species_of_atom, params_list):
    """Static layout of all projector channels ``(atom, l, i, m)`` of a structure (host-side).

    Returns:
        dict of numpy int arrays, one entry per channel: ``atom``, ``species``, ``l``, ``i``
        (1-based projector index), ``m`` (0..2l), and ``lblocks``: list of (l, i) pairs that occur.
    """
    atom, spec, ls, iis, ms = [], [], [], [], []
    for a, s in enumerate(species_of_atom):
        p = params_list[s]
        for l in range(LMAX + 1):
            for i in range(1, int(p.nproj[l]) + 1):
                for m in range(2 * l + 1):
                    atom.append(a)
                    spec.append(s)
                    ls.append(l)
                    iis.append(i)
                    ms.append(m)
    arr = lambda v: np.asarray(v, dtype=np.int32)
    return {"atom": arr(atom), "species": arr(spec), "l": arr(ls), "i": arr(iis), "m": arr(ms)}
