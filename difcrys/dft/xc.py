"""Exchange–correlation functionals (spin-unpolarised), Hartree atomic units.

A functional is an :class:`XCFunctional`: a pure function ``eps(rho, sigma, params)``
giving the energy per electron ε_xc [Ha] from the density ρ [Bohr⁻³] and, for GGAs,
``sigma = |∇ρ|²``; ``params`` is a pytree of traced parameters, so a learnable
functional is differentiable w.r.t. them. The potential ``v_xc = δE_xc/δρ`` is
always obtained by automatic differentiation of ``E_xc = ∫ ρ ε_xc`` (see
:func:`difcrys.dft.terms.xc_energy`), never coded by hand.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp

RHO_MIN = 1e-14  # densities below this are treated as vacuum (ε_xc ρ → 0)


@dataclasses.dataclass(frozen=True)
class XCFunctional:
    """An exchange–correlation functional.

    Attributes:
        name: identifier (``lda-teter``, ``lda-pw92``, ``gga-pbe``).
        eps: ``eps(rho, sigma, params) -> ε_xc`` per electron [Ha].
        params: default parameter pytree (floats).
        needs_gradient: True for GGAs (σ = |∇ρ|² is computed by FFT).
    """

    name: str
    eps: Callable
    params: Any
    needs_gradient: bool = False


# Goedecker–Teter–Hutter Padé fit to Ceperley–Alder/Perdew–Wang LDA, PRB 54, 1703 (1996),
# Eq. (4) and Table I (spin-unpolarised coefficients; ABINIT ixc = 1).
TETER_PARAMS = {
    "a": jnp.array([0.4581652932831429, 2.217058676663745, 0.7405551735357053, 0.01968227878617998]),
    "b": jnp.array([1.0, 4.504130959426697, 1.110667363742916, 0.02359291751427506]),
}


def _rs(rho):
    return (3.0 / (4.0 * jnp.pi * rho)) ** (1.0 / 3.0)


def _safe_rho(rho):
    return jnp.where(rho > RHO_MIN, rho, RHO_MIN)


def eps_teter(rho, sigma=None, params=TETER_PARAMS):
    """Teter–Padé LDA ε_xc(r_s) = −(a0 + a1 r_s + a2 r_s² + a3 r_s³)/(b1 r_s + b2 r_s² + b3 r_s³ + b4 r_s⁴)."""
    rs = _rs(_safe_rho(rho))
    a, b = params["a"], params["b"]
    num = a[0] + rs * (a[1] + rs * (a[2] + rs * a[3]))
    den = rs * (b[0] + rs * (b[1] + rs * (b[2] + rs * b[3])))
    return jnp.where(rho > RHO_MIN, -num / den, 0.0)


# Perdew & Wang, PRB 45, 13244 (1992), Table I, unpolarised ε_c(r_s, 0) (p = 1).
# ``A = 0.031091`` as in the paper (libxc LDA_C_PW, ABINIT ixc = 7 / -1012); PBE uses the
# "modified" value with more digits, ``A = 0.0310907`` (libxc LDA_C_PW_MOD).
PW92_PARAMS = {"A": 0.031091, "alpha1": 0.21370, "beta": jnp.array([7.5957, 3.5876, 1.6382, 0.49294])}
PW92_MOD_PARAMS = {"A": 0.0310907, "alpha1": 0.21370, "beta": jnp.array([7.5957, 3.5876, 1.6382, 0.49294])}


def eps_x_lda(rho):
    """Slater exchange per electron ε_x = −(3/4)(3/π)^{1/3} ρ^{1/3}."""
    return -0.75 * (3.0 / jnp.pi) ** (1.0 / 3.0) * _safe_rho(rho) ** (1.0 / 3.0)


def eps_c_pw92(rho, params=PW92_PARAMS):
    """PW92 correlation per electron (PRB 45, 13244, Eq. 10)."""
    rs = _rs(_safe_rho(rho))
    A, a1, b = params["A"], params["alpha1"], params["beta"]
    srs = jnp.sqrt(rs)
    den = 2 * A * (b[0] * srs + b[1] * rs + b[2] * rs * srs + b[3] * rs * rs)
    return -2 * A * (1 + a1 * rs) * jnp.log1p(1.0 / den)


def eps_pw92(rho, sigma=None, params=PW92_PARAMS):
    """LDA: Slater exchange + PW92 correlation."""
    return jnp.where(rho > RHO_MIN, eps_x_lda(rho) + eps_c_pw92(rho, params), 0.0)


# PBE: Perdew, Burke, Ernzerhof, PRL 77, 3865 (1996), Eqs. (7)-(8), (14).
PBE_PARAMS = {"kappa": 0.804, "mu": 0.2195149727645171, "beta": 0.06672455060314922, "pw92": PW92_MOD_PARAMS}


def eps_pbe(rho, sigma, params=PBE_PARAMS):
    """PBE GGA ε_xc (spin-unpolarised)."""
    r = _safe_rho(rho)
    sig = jnp.maximum(sigma, 0.0)
    kf = (3 * jnp.pi**2 * r) ** (1.0 / 3.0)
    s2 = sig / (4 * kf**2 * r**2)
    kappa, mu = params["kappa"], params["mu"]
    fx = 1 + kappa - kappa / (1 + mu * s2 / kappa)
    ex = eps_x_lda(r) * fx
    ec_lda = eps_c_pw92(r, params["pw92"])
    gamma = (1 - jnp.log(2.0)) / jnp.pi**2
    beta = params["beta"]
    ks = jnp.sqrt(4 * kf / jnp.pi)
    t2 = sig / (4 * ks**2 * r**2)
    A = beta / gamma / jnp.expm1(-ec_lda / gamma)
    At2 = A * t2
    H = gamma * jnp.log1p(beta / gamma * t2 * (1 + At2) / (1 + At2 + At2**2))
    return jnp.where(rho > RHO_MIN, ex + ec_lda + H, 0.0)


FUNCTIONALS = {
    "lda-teter": XCFunctional("lda-teter", eps_teter, TETER_PARAMS),
    "lda-pw92": XCFunctional("lda-pw92", eps_pw92, PW92_PARAMS),
    "gga-pbe": XCFunctional("gga-pbe", eps_pbe, PBE_PARAMS, needs_gradient=True),
}


def get_functional(name: str | XCFunctional) -> XCFunctional:
    """Look up a functional by name (``lda-teter``, ``lda-pw92``, ``gga-pbe``)."""
    from difcrys.errors import ConfigError

    if isinstance(name, XCFunctional):
        return name
    key = name.lower().replace("_", "-")
    aliases = {"teter": "lda-teter", "lda": "lda-teter", "pade": "lda-teter", "pw92": "lda-pw92", "pbe": "gga-pbe"}
    key = aliases.get(key, key)
    if key not in FUNCTIONALS:
        raise ConfigError(f"unknown exchange-correlation functional {name!r}; choose one of {sorted(FUNCTIONALS)}")
    return FUNCTIONALS[key]
